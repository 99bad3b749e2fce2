"""The suite's model server (a real `python -m pipeline.serve http` process, tests/serve/conftest.py) answers
concurrent clients from their own rows: 8 client threads x 400 requests (queries, pages, both) to `/invocations`
get exactly the answers the same requests get one at a time. MLflow's scoring app predicts in parallel, so before
the retriever's forward lock some of these came back HTTP 200 with another client's vectors."""

import json
import urllib.request

import torch

from pipeline.registry.pyfunc import encode_image
from tests.helpers.threaded_calls import differing, distinct_inputs, hammer



def bodies() -> list[bytes]:
    """60 different requests: 20 queries, 20 pages, 20 with a query and a page."""
    queries, pages = distinct_inputs()
    images = [encode_image(p) for p in pages]
    rows = ([[{"query": q}] for q in queries] + [[{"image": i}] for i in images]
            + [[{"query": q}, {"image": i}] for q, i in zip(queries, reversed(images))])
    return [json.dumps({"dataframe_records": r}).encode() for r in rows]


def post(port: int, body: bytes):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read())["predictions"]


def test_concurrent_clients_get_their_own_answers(model_server):
    port, retriever = model_server[:2]
    distinct = bodies()
    reference = [post(port, b) for b in distinct]
    assert all(status == 200 for status, _ in reference)
    assert len({json.dumps(p[0]["vectors"]) for _, p in reference}) == 40  # every input has its own vectors
    queries, _ = distinct_inputs()
    torch.testing.assert_close(torch.tensor(reference[0][1][0]["vectors"]), retriever.embed(queries=queries[:1])[0])
    calls = [distinct[(7 * i) % len(distinct)] for i in range(400)]
    answers = hammer(lambda b: post(port, b), calls, threads=8)
    expected = [reference[(7 * i) % len(distinct)] for i in range(400)]
    assert differing(answers, expected, lambda a, b: a == b) == []
