"""Serving's request path: a request without the expected columns, with both or neither, or not in a known format is a
400 with one human-readable line (no stack trace, no paths); too many rows or bytes is a 413. First the checks
alone, then the suite's model server (a real `python -m pipeline.serve http` process, tests/serve/conftest.py)."""

import base64
import json

import pytest
from PIL import Image

from pipeline.registry.pyfunc import encode_image
from pipeline.serve.http import BadRequest, check_request
from tests.helpers.serving import LIMITS, post

JSON = "application/json"
CASES = [  # (body, status, message)
    ({"dataframe_split": {"columns": ["qurey"], "data": [["ABC"]]}}, 400,
     "unknown column 'qurey': the columns are 'query' (text) and 'image' (base64 PNG/JPEG)"),
    ({"inputs": ["ABC"]}, 400, "inputs must be a list of rows like {\"query\": \"...\"} or a mapping of columns"),
    ({"inputs": {"query": ["ABC", "DEF"]}}, None, None),
    ({"dataframe_records": [{"query": "ABC", "image": "aGk="}]}, 400,
     "row 0 has both 'query' and 'image': give exactly one"),
    ({"dataframe_split": {"columns": ["query", "image"], "data": [["ABC", None], [None, ""]]}}, 400,
     "row 1 has neither 'query' and 'image': give exactly one"),
    ({"dataframe_records": []}, 400,
     "no rows: send at least one row with a 'query' (text) or an 'image' (base64 PNG/JPEG)"),
    ({"query": "ABC"}, 400, "expected exactly one of dataframe_split, dataframe_records, inputs, instances; got 'query'"),
    ({"dataframe_split": {"columns": ["query"], "data": [["a", "b"]]}}, 400,
     "dataframe_split needs 'columns' and 'data' (rows of that many values)"),
    ({"instances": [{"query": str(i)} for i in range(5)]}, 413,
     "5 rows exceed the limit of 4 per request (serve.max_rows)"),
]


@pytest.mark.parametrize("body,status,message", CASES, ids=[str(i) for i in range(len(CASES))])
def test_checks(body, status, message):
    if status is None:
        check_request(json.dumps(body).encode(), JSON, max_rows=4)
        return
    with pytest.raises(BadRequest) as err:
        check_request(json.dumps(body).encode(), JSON, max_rows=4)
    assert (err.value.status, err.value.message) == (status, message)


def test_not_json_and_wrong_type():
    with pytest.raises(BadRequest) as err:
        check_request(b"{'query': 1", JSON, 4)
    assert err.value.status == 400 and err.value.message.startswith("the body is not JSON (")
    with pytest.raises(BadRequest) as err:
        check_request(b"query,image\nabc,\n", "text/csv", 4)
    assert (err.value.status, err.value.message) == (415, "send Content-Type: application/json (got 'text/csv')")


def test_live_server_answers_bad_requests_in_one_line(model_server):
    server = model_server[0]
    for body, status, message in CASES:
        if status is None:
            code, answer = post(server, "/invocations", json.dumps(body).encode())
            assert code == 200 and [p["kind"] for p in answer["predictions"]] == ["query", "query"]
            continue
        code, answer = post(server, "/invocations", json.dumps(body).encode())
        assert (code, answer) == (status, {"error_code": "REQUEST_TOO_LARGE" if status == 413 else "BAD_REQUEST",
                                           "message": message})


def test_live_server_limits_bytes_and_hides_model_errors(model_server):
    server, limit = model_server[0], int(LIMITS["max_request_mb"] * 2**20)
    big = json.dumps({"inputs": {"query": ["x" * limit]}}).encode()
    code, answer = post(server, "/invocations", big)
    assert code == 413 and answer["message"] == (f"the body has {len(big)} bytes, over the limit of {limit} bytes "
                                                 "(serve.max_request_mb)")
    not_an_image = base64.b64encode(b"definitely not a png").decode()
    code, answer = post(server, "/invocations", json.dumps({"inputs": [{"image": not_an_image}]}).encode())
    assert code == 400 and answer == {"error_code": "BAD_REQUEST",
                                      "message": "row 0: 'image' is not a base64 PNG or JPEG"}
    page = encode_image(Image.new("RGB", (112, 112), "white"))
    code, answer = post(server, "/invocations", json.dumps({"dataframe_split": {"columns": ["query", "image"],
                                                                 "data": [["ABC", None], [None, page]]}}).encode())
    assert code == 200 and [p["kind"] for p in answer["predictions"]] == ["query", "page"]
    assert len(answer["predictions"][1]["vectors"][0]) == 32  # the half variant: dim 32
