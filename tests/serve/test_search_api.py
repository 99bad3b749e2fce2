"""`POST /search` on the suite's model server (tests/serve/conftest.py): the answers of the in-process searcher, a
budget or a cascade per request, every refusal one line with its status (no stack trace), the same answers under
8 concurrent clients; and the guard's limits on `/invocations` (nested JSON, image pixels before decoding)."""

import base64
import io
import json
import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from pipeline.model.budgets import Budget
from pipeline.registry.pyfunc import encode_image
from pipeline.serve import deploy
from pipeline.serve.collections import Target
from pipeline.serve.search import Searcher
from pipeline.serve.search_api import SearchError, answer, parse_search
from tests.helpers.serving import SERVE, post

WORDS = ["ABC", "XYZ", "find QRS", "KLM page", "the code DEF", "GHI", "NOP", "TUV"]


@pytest.fixture(scope="module")
def local(model_server):
    """The in-process searcher over the same pages in the flat exact index (the reference the server's Qdrant
    answers must equal: the server holds its Edge collection, which lives in one process)."""
    return deploy.searcher(model_server[3])


def as_rows(hits) -> list[list[dict]]:
    return [[{"key": h.key, "score": h.score, **{f: h.payload.get(f) for f in ("doc", "page", "shard")}} for h in row]
            for row in hits]


def test_search_answers_what_the_searcher_does(model_server, local):
    port = model_server[0]
    code, got = post(port, "/search", {"queries": WORDS[:3], "k": 4})
    assert code == 200 and got["stages"] == [["L2-d32-page", 8], ["L2-d32-p2", 4]]  # serve.cascade, k=4
    want = as_rows(local.search(WORDS[:3], 4))
    assert [[h["key"] for h in r] for r in got["results"]] == [[h["key"] for h in r] for r in want]
    for g, w in zip(got["results"], want):
        assert [h["score"] for h in g] == pytest.approx([h["score"] for h in w], abs=8 * 2**-11)  # Qdrant rounds queries to float16 (<= 8 query vectors)
    assert got["version"] == local.version and all(len(r) == 4 for r in got["results"])
    code, one = post(port, "/search", {"queries": ["ABC"], "k": 3, "budget": "L1-d16-p4"})
    assert code == 200 and one["stages"] == [["L1-d16-p4", 3]]
    assert [h["key"] for h in one["results"][0]] == [
        h["key"] for h in as_rows(local.search(["ABC"], 3, [(Budget.parse("L1-d16-p4"), 3)]))[0]]
    code, every = post(port, "/search", {"queries": ["ABC"], "k": 5, "cascade": [["L2-d32-page", 12],
                                                                                 ["L2-d32-p2", 5]]})
    assert code == 200 and every["results"] == post(port, "/search", {"queries": ["ABC"], "k": 5,
                                                                      "budget": "L2-d32-p2"})[1]["results"]


REFUSALS = [  # (body, status, message start)
    (b"{'queries': 1", 400, "the body is not JSON ("),
    (b"[" * 100_000 + b"]" * 100_000, 400, "the body is not JSON (nested too deeply)"),
    ([1, 2], 400, "the body must be a JSON object"),
    ({"queries": ["a"], "kk": 3}, 400, "unknown field 'kk'"),
    ({"queries": []}, 400, "'queries' must be a non-empty list of non-empty strings"),
    ({"queries": ["a", " "]}, 400, "'queries' must be a non-empty list of non-empty strings"),
    ({"queries": ["a"] * 5}, 413, "5 queries exceed the limit of 4 per request (serve.max_rows)"),
    ({"queries": ["a"], "k": 0}, 400, "'k' must be an integer from 1 to 1000, got 0"),
    ({"queries": ["a"], "k": True}, 400, "'k' must be an integer from 1 to 1000, got True"),
    ({"queries": ["a"], "budget": "L2-d32-p2", "cascade": []}, 400, "give 'budget' or 'cascade', not both"),
    ({"queries": ["a"], "budget": "L2-x"}, 400, "budget: not a budget: 'L2-x'"),
    ({"queries": ["a"], "budget": "L2-d32-p4"}, 400, "budgets L2-d32-p4 are not stored in this collection"),
    ({"queries": ["a"], "budget": "L4-d32-p2"}, 400, "budget L4-d32-p2 is out of reach of the served variant"),
    ({"queries": ["a"], "cascade": [["L2-d32-page", 2], ["L2-d32-p2", 5]]}, 400,
     "k=10 is more than the cascade's previous stage keeps (2)"),
    ({"queries": ["a"], "cascade": [["L2-d32-page", -1], ["L2-d32-p2", 5]]}, 400,
     "cascade[0]: the limit must be a positive integer"),
]


@pytest.mark.parametrize("body,status,start", REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_refusals_are_one_line_with_their_status(model_server, body, status, start):
    code, got = post(model_server[0], "/search", body)
    assert code == status and got["message"].startswith(start), got
    assert "\n" not in got["message"] and "Traceback" not in got["message"] and set(got) == {"error_code", "message"}


def test_wrong_method_and_media_type(model_server):
    port = model_server[0]
    assert post(port, "/search", {"queries": ["a"]}, "text/plain")[0] == 415
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/search", timeout=30)
    assert err.value.code == 405 and json.loads(err.value.read())["message"] == "/search takes POST"


def test_concurrent_clients_get_their_own_answers(model_server):
    """8 clients x 8 requests at once get exactly what each request got alone, one at a time."""
    rng = random.Random(0)
    requests = [{"queries": rng.sample(WORDS, rng.randint(1, 3)), "k": rng.randint(1, 5)} for _ in range(64)]
    want = [post(model_server[0], "/search", r)[1]["results"] for r in requests]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: post(model_server[0], "/search", r), requests))
    assert [c for c, _ in got] == [200] * len(requests)
    assert [g["results"] for _, g in got] == want
    assert len({json.dumps(w) for w in want}) > 30  # the requests differ: a mixed-up answer would show


def _png(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, format="PNG")  # 1-bit: a huge image in few bytes (a decompression bomb)
    return base64.b64encode(buf.getvalue()).decode()


def test_invocations_refuse_big_images_before_decoding_and_deep_json(model_server):
    port = model_server[0]
    code, got = post(port, "/invocations", {"inputs": [{"image": _png((201, 200))}]})
    assert code == 413 and got["message"] == ("row 0: the image is 201 x 200 = 40200 pixels, over the limit of 40000 "
                                              "(serve.max_image_pixels)")
    bomb = _png((13000, 13000))
    assert len(bomb) < 60_000  # the bytes are small; 169 M pixels if decoded
    code, got = post(port, "/invocations", {"inputs": [{"image": bomb}]})
    assert code == 413 and "13000 x 13000 = 169000000 pixels" in got["message"]
    code, got = post(port, "/invocations", b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    assert code == 400 and got["message"] == "the body is not JSON this server reads (nested too deeply)"
    page = encode_image(Image.new("RGB", (200, 200), "white"))
    assert post(port, "/invocations", {"inputs": [{"image": page}]})[0] == 200  # at the limit: served


def test_no_collection_is_503_and_another_version_409(model_server, local, tmp_path):
    """In-process: the searcher over an empty directory, and over the server's collection claiming another
    version than the model it serves."""
    cfg = model_server[2]
    empty = Searcher(local.retriever, Target("qdrant", tmp_path, None, "QDRANT_API_KEY", "x"), cfg.serve,
                     local.model_uri, local.version)
    with pytest.raises(SearchError) as err:
        answer(empty, ["ABC"], 3, None)
    assert err.value.status == 503 and "no index here" in err.value.message
    other = Searcher(local.retriever, local.target, cfg.serve, local.model_uri, (local.version or 0) + 1)
    with pytest.raises(SearchError) as err:
        answer(other, ["ABC"], 3, None)
    assert err.value.status == 409 and "is not what the live collection holds" in err.value.message
    assert parse_search(b'{"queries": ["a"], "k": 2}', 4) == (["a"], 2, None)


def test_indexing_into_a_collection_a_server_holds_is_refused_in_one_line(model_server, chain, capsys):
    """Qdrant Edge lives in one process: while the server has its collection open, `serve index` into it stops
    before writing, naming why (the server keeps answering)."""
    from pipeline.serve.__main__ import main as serve_main

    cfg = model_server[2]
    assert post(model_server[0], "/search", {"queries": ["ABC"], "k": 2})[0] == 200  # it holds its collection
    capsys.readouterr()
    code = serve_main(["index", "--tracking-uri", cfg.tracking.tracking_uri, "--model", cfg.tracking.registered_model,
                       "--alias", cfg.serve.alias, "--index-dir", cfg.serve.index_dir, *SERVE, "--shards",
                       str(chain.shards), "--split", "train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "the collection is open in another process" in err[0]
    assert post(model_server[0], "/search", {"queries": ["ABC"], "k": 2})[0] == 200
