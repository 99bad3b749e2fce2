"""Deploying a registered variant through `python -m pipeline.serve` on the chain's trained tiny model: Qdrant Edge
and the server code path (qdrant-client's local mode) return the flat exact index's top-k with its scores (and a
plain-Python MaxSim over the hand-quantised pages), cascades included; a re-index switches atomically and survives
kill -9; upsert and delete need no rebuild; another version's collection is refused; the HTTP server answers with
the vectors of direct encoding."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from pipeline.registry.promotion import promote
from pipeline.registry.pyfunc import encode_image
from pipeline.serve.__main__ import main as serve_main
from pipeline.serve.pages import read_pages, shards_of
from tests.helpers.chain import NAME
from tests.helpers.drawn import TOLERANCE
from tests.helpers.procs import ROOT
from tests.helpers.reference import half, hand_bin, hand_int8, ref_maxsim
from tests.helpers.shards import write_shards

ALIAS = "serving"
BUDGETS = ["L4-d128-p1", "L4-d128-page", "L2-d32-p2", "L2-d32-p2-int8", "L2-d32-p2-bin"]
STORED = {"fp16": lambda v: [half(x) for x in v], "int8": hand_int8, "bin": hand_bin}


@pytest.fixture(scope="module")
def served(chain):
    """The chain's `full` variant under the alias `serving` (it reaches every budget of BUDGETS)."""
    cfg = chain.config()
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    cards = chain.registered()
    promote(client, NAME, ALIAS, 0.0, version=cards["full"]["registered"]["version"])
    from pipeline.export.variants import load_variant

    return cfg, client, cards, load_variant(chain.exported()["full"][0])[0], chain.shards


def cli(served, index_dir, *args: str) -> list[str]:
    cfg = served[0]
    return ["--tracking-uri", cfg.tracking.tracking_uri, "--model", NAME, "--alias", ALIAS, "--index-dir",
            str(index_dir), f"serve.budgets=[{', '.join(BUDGETS)}]", *args]


def search(served, index_dir, capsys, queries, *args: str) -> list[dict]:
    capsys.readouterr()
    argv = ["search", *cli(served, index_dir, *args)]
    for q in queries:
        argv += ["--query", q]
    assert serve_main(argv) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def indexed(served, tmp_path_factory):
    """The chain's 12 pages indexed at every budget of BUDGETS in Edge, the flat index and the server code path."""
    out = {}
    for engine, extra in (("edge", []), ("flat", ["--engine", "flat"]),
                          ("client", ["--qdrant-url", f"path:{tmp_path_factory.mktemp('local-qdrant')}"])):
        out[engine] = (tmp_path_factory.mktemp(engine), extra)
        assert serve_main(["index", *cli(served, out[engine][0], *extra), "--shards", str(served[4]),
                           "--split", "train"]) == 0
    return out


def test_every_engine_returns_the_exact_top_k_at_every_budget(served, indexed, capsys):
    _, _, _, retriever, shards = served
    pages = list(read_pages(shards_of(shards, "train")))
    queries = ["ABC", pages[3].key[:3], "XYZ Q"]
    from pipeline.model.budgets import Budget

    for name in BUDGETS:
        b = Budget.parse(name)
        runs = {e: search(served, d, capsys, queries, *x, f"serve.cascade=[[{name}, 5]]")
                for e, (d, x) in indexed.items()}
        pv = [v[b.fp16] for v in retriever.embed_budgets([b.fp16], pages=[p.image for p in pages])]
        stored = [[STORED[b.precision](row) for row in v.tolist()] for v in pv]
        qv = retriever.embed_budgets([b.fp16], queries=queries)
        reference = ref_maxsim([v[b.fp16].tolist() for v in qv], stored)
        for qi, row in enumerate(reference):
            best = sorted(range(len(pages)), key=lambda j: -row[j])[:5]
            tol = len(qv[qi][b.fp16]) * TOLERANCE[b.precision]  # the README's bound for Qdrant's float16 storage
            by_key = {p.key: row[j] for j, p in enumerate(pages)}
            for engine, lines in runs.items():
                got = lines[qi]["results"]
                assert [h["score"] for h in got] == pytest.approx([by_key[h["key"]] for h in got], abs=tol)
                # the reference's top-5 scores, best first (pages with equal sign bits tie: their order is free)
                assert [h["score"] for h in got] == pytest.approx([row[j] for j in best], abs=2 * tol), (name, engine)
                if b.precision == "fp16":  # no ties: the exact top-k, in order
                    assert [h["key"] for h in got] == [pages[j].key for j in best], (name, engine)
                assert got[0]["doc"] and got[0]["shard"].startswith("train-")


def test_a_cascade_keeping_every_page_is_exact_search(served, indexed, capsys):
    d, _ = indexed["edge"]
    queries = ["ABC", "QRS"]
    exact = search(served, d, capsys, queries, "serve.cascade=[[L4-d128-p1, 4]]")
    every = search(served, d, capsys, queries,
                   "serve.cascade=[[L4-d128-page, 12], [L2-d32-p2-bin, 12], [L4-d128-p1, 4]]")
    assert [r["results"] for r in every] == [r["results"] for r in exact]
    flat = search(served, indexed["flat"][0], capsys, queries, "--engine", "flat", "-k", "3",
                  "serve.cascade=[[L4-d128-page, 3], [L4-d128-p1, 3]]")
    edge = search(served, d, capsys, queries, "-k", "3", "serve.cascade=[[L4-d128-page, 3], [L4-d128-p1, 3]]")
    assert [[h["key"] for h in r["results"]] for r in edge] == [[h["key"] for h in r["results"]] for r in flat]


def test_upsert_and_delete_need_no_rebuild(served, tmp_path, capsys):
    more = write_shards(tmp_path / "more", n_pages=4, seed=5, first_doc=100)  # 4 new documents
    common = cli(served, tmp_path / "index")
    assert serve_main(["index", *common, "--shards", str(served[4]), "--split", "train"]) == 0
    link = os.readlink(tmp_path / "index" / "current")
    assert serve_main(["index", *common, "--shards", str(more), "--split", "train"]) == 0
    assert os.readlink(tmp_path / "index" / "current") == link  # the same collection, upserted into
    capsys.readouterr()
    assert serve_main(["verify", *common]) == 0
    assert json.loads(capsys.readouterr().out) == {"verified_pages": 16}
    doc = next(read_pages(shards_of(more, "train"))).doc
    assert serve_main(["delete", *common, "--doc", doc]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted_pages": 1, "docs": [doc]}
    hits = search(served, tmp_path / "index", capsys, ["ABC"], "-k", "15", "serve.cascade=[[L2-d32-p2, 15]]")
    assert len(hits[0]["results"]) == 15 and doc not in {h["doc"] for h in hits[0]["results"]}


def test_a_new_version_is_refused_then_reindexed_and_switched_atomically(served, tmp_path, capsys):
    cfg, client, cards, _, shards = served
    common = cli(served, tmp_path / "index")
    assert serve_main(["index", *common, "--shards", str(shards), "--split", "train"]) == 0
    first = os.readlink(tmp_path / "index" / "current")
    client.set_registered_model_alias(NAME, ALIAS, str(cards["half"]["registered"]["version"]))
    try:
        capsys.readouterr()
        assert serve_main(["search", *common, "--query", "ABC"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not what the live collection holds" in err[0]
        half_budgets = "serve.budgets=[L2-d32-p2, L1-d16-p4]"
        assert serve_main(["index", *common, half_budgets, "--shards", str(shards), "--split", "train"]) == 0
        second = os.readlink(tmp_path / "index" / "current")
        assert second != first and (tmp_path / "index" / first).is_dir()  # the previous one is kept
        hits = search(served, tmp_path / "index", capsys, ["ABC"], half_budgets)
        assert len(hits[0]["results"]) == 5
    finally:
        client.set_registered_model_alias(NAME, ALIAS, str(cards["full"]["registered"]["version"]))


def test_kill_9_during_a_reindex_leaves_the_previous_collection_live(served, tmp_path, capsys):
    common = cli(served, tmp_path / "index")
    assert serve_main(["index", *common, "--shards", str(served[4]), "--split", "train"]) == 0
    before = search(served, tmp_path / "index", capsys, ["ABC", "QRS"])
    live = os.readlink(tmp_path / "index" / "current")
    many = write_shards(tmp_path / "many", n_pages=240, shard_size=60, seed=9)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.serve", "index", *common, "serve.budgets=[L4-d128-p1]",
                             "serve.batch_size=4", "--shards", str(many), "--split", "train"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    collections = tmp_path / "index" / "collections"
    deadline = time.time() + 120
    while len(list(collections.iterdir())) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the 240-page load
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and len(list(collections.iterdir())) == 2
    assert os.readlink(tmp_path / "index" / "current") == live
    assert search(served, tmp_path / "index", capsys, ["ABC", "QRS"]) == before
    assert serve_main(["index", *common, "--shards", str(served[4]), "--split", "train"]) == 0  # the lock is gone


def test_no_collection_and_a_tampered_flat_index_are_one_line(served, indexed, tmp_path, capsys):
    capsys.readouterr()
    assert serve_main(["search", *cli(served, tmp_path / "none"), "--query", "ABC"]) == 1
    err = capsys.readouterr()
    assert err.out == "" and err.err.count("\n") == 1 and "no index here" in err.err
    d = indexed["flat"][0] / "current"
    tensors = d / "flat.safetensors"
    original = tensors.read_bytes()
    try:
        data = bytearray(original)
        data[-8:] = bytes(255 - b for b in data[-8:])
        tensors.write_bytes(bytes(data))
        assert serve_main(["search", *cli(served, indexed["flat"][0], "--engine", "flat"), "--query", "ABC"]) == 1
        err = capsys.readouterr()
        assert err.out == "" and err.err.count("\n") == 1 and "does not match its sha256" in err.err
    finally:
        tensors.write_bytes(original)


def test_http_serving_matches_direct_encoding(model_server):
    port, retriever = model_server[:2]
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
