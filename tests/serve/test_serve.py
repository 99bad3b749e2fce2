"""Serving: the suite's model server (a real `python -m pipeline.serve http` process) answers with the same vectors
as direct encoding; the index/search commands return the brute-force top-k and refuse an index of another version."""

import json
import urllib.request

import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from pipeline.data.reader import ShardPages
from pipeline.export.variants import load_variant
from pipeline.registry.promotion import promote
from pipeline.registry.pyfunc import encode_image
from pipeline.serve.__main__ import main as serve_main
from tests.helpers.chain import NAME
from tests.helpers.reference import ref_maxsim
from tests.helpers.reference import half, hand_bin

pytestmark = pytest.mark.xdist_group("model-server")
ALIAS = "serving"
ALIASES = {"half": ALIAS, "half-bin": "serving-bin"}  # the same weights, page vectors stored at fp16 / as bits


@pytest.fixture(scope="module")
def served(chain):
    cfg = chain.config()
    cards = chain.registered()
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    for variant, alias in ALIASES.items():
        promote(client, NAME, alias, 0.0, version=cards[variant]["registered"]["version"])
    retriever, _ = load_variant(chain.exported()["half"][0])
    return cfg, client, cards, retriever, chain.shards


def test_http_serving_matches_direct_encoding(model_server):
    port, retriever = model_server
    images = [Image.new("RGB", (112, 112), "white"), Image.effect_noise((168, 112), 40).convert("RGB")]
    body = {"dataframe_split": {"columns": ["query", "image"], "data": [
        ["ABC", None], [None, encode_image(images[0])], [None, encode_image(images[1])], ["find XYZ", None]]}}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        preds = json.loads(r.read())["predictions"]
    want = [retriever.embed(queries=["ABC"])[0], *retriever.embed(pages=images),
            retriever.embed(queries=["find XYZ"])[0]]
    assert [p["kind"] for p in preds] == ["query", "page", "page", "query"]
    for p, w in zip(preds, want):
        torch.testing.assert_close(torch.tensor(p["vectors"]), w, atol=1e-6, rtol=1e-6)
    assert torch.tensor(preds[2]["vectors"]).shape == (6, 32)  # a 4 x 6 grid pooled by 2, dim 32


@pytest.mark.parametrize("variant", list(ALIASES))
def test_index_and_search_match_brute_force(served, tmp_path, capsys, variant):
    """The index stores the variant's precision (bytes on disk = the card's bytes/page x pages + header and offsets)
    and search ranks as brute-force MaxSim over the pages quantised by hand."""
    cfg, client, cards, retriever, shards = served
    alias, precision = ALIASES[variant], cards[variant]["budget"]["precision"]
    common = ["--tracking-uri", cfg.tracking.tracking_uri, "--model", NAME, "--alias", alias,
              "--index-dir", str(tmp_path / "index")]
    assert serve_main(["index", *common, "--shards", str(shards), "--split", "train"]) == 0
    pages = list(ShardPages(shards, "train").pages())
    index_bytes = (tmp_path / "index" / "index.safetensors").stat().st_size
    vector_bytes = len(pages) * cards[variant]["bytes_per_page"]  # the codes: the card's bytes/page, exactly
    offsets_bytes = (len(pages) + 1) * 8
    assert vector_bytes + offsets_bytes < index_bytes < vector_bytes + offsets_bytes + 512
    header = json.loads((tmp_path / "index" / "index.json").read_text())
    assert header["precision"] == precision and header["codes_bytes"] == vector_bytes and header["dim"] == 32
    queries = [pages[3].queries[0], pages[7].queries[0]]
    capsys.readouterr()
    assert serve_main(["search", *common, "--query", queries[0], "--query", queries[1], "-k", "3"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    stored = {"fp16": lambda v: [half(x) for x in v], "bin": hand_bin}[precision]
    pv = [[stored(v) for v in page.tolist()] for page in retriever.embed(pages=[p.image for p in pages])]
    qv = retriever.embed(queries=queries)
    scores = ref_maxsim([q.tolist() for q in qv], pv)
    for line, query, row in zip(lines, queries, scores):
        best = sorted(range(len(pages)), key=lambda j: -row[j])[:3]
        assert line["query"] == query and [h["key"] for h in line["results"]] == [pages[j].key for j in best]
        assert [h["score"] for h in line["results"]] == pytest.approx([row[j] for j in best], abs=1e-4)
    # The alias moves to another version: the index no longer matches it, and search refuses.
    client.set_registered_model_alias(NAME, alias, str(cards["full"]["registered"]["version"]))
    try:
        assert serve_main(["search", *common, "--query", queries[0]]) == 1
    finally:
        client.set_registered_model_alias(NAME, alias, str(cards[variant]["registered"]["version"]))


def test_search_without_a_current_index_is_one_line(served, tmp_path, capsys):
    """No index, or an index of the earlier layout (float16 `vectors`, no codes): one line, exit 1, nothing printed."""
    from safetensors.torch import save_file

    cfg = served[0]
    common = ["--tracking-uri", cfg.tracking.tracking_uri, "--model", NAME, "--alias", ALIAS, "--query", "ABC"]
    capsys.readouterr()
    assert serve_main(["search", *common, "--index-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr()
    assert err.out == "" and err.err.count("\n") == 1 and "no index here" in err.err
    old = tmp_path / "old"
    old.mkdir()
    save_file({"vectors": torch.zeros(2, 32, dtype=torch.float16), "offsets": torch.tensor([0, 2])},
              str(old / "index.safetensors"))
    (old / "index.json").write_text(json.dumps({"keys": ["a"], "model_uri": "x", "version": 1}))
    assert serve_main(["search", *common, "--index-dir", str(old)]) == 1
    err = capsys.readouterr()
    assert err.out == "" and err.err.count("\n") == 1 and "an index of an earlier version" in err.err
