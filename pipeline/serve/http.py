"""The HTTP server: `POST /search` (pipeline/serve/search_api.py) over the live collection, and MLflow's scoring app
for the variant pyfunc at `/invocations`, behind a guard that answers a bad request with one human-readable line
before the model sees it.

The guard (an ASGI wrapper) reads at most `serve.max_request_mb` of body (larger: 413). For `/invocations` it
accepts JSON in MLflow's formats (`dataframe_split`, `dataframe_records`, `inputs`, `instances`), refuses more than
`serve.max_rows` rows (413) and page images over `serve.max_image_pixels` (413, read from the image header before
any decoding), and checks the columns and rows with the pyfunc's own `check_rows` (400). Error responses from the
scoring app are cut to {"error_code", "message"}: no stack trace, no install paths.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.gc_phases import setting_up
from pipeline.registry.pyfunc import RequestError, check_rows

log = logging.getLogger(__name__)
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")


class BadRequest(Exception):
    """A request refused before the model: HTTP `status` and one line of why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def records_of(payload: Any) -> list[dict]:
    """The rows of a JSON request in any of MLflow's formats, as dicts; BadRequest when it has none of them."""
    if not isinstance(payload, dict):
        raise BadRequest(400, f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    keys = [k for k in payload if k != "params"]
    if len(keys) != 1 or keys[0] not in FORMATS:
        got = ", ".join(map(repr, keys)) or "nothing"
        raise BadRequest(400, f"expected exactly one of {', '.join(FORMATS)}; got {got}")
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not (isinstance(data, dict) and isinstance(data.get("columns"), list) and isinstance(data.get("data"), list)
                and all(isinstance(r, list) and len(r) == len(data["columns"]) for r in data["data"])):
            raise BadRequest(400, "dataframe_split needs 'columns' and 'data' (rows of that many values)")
        return [dict(zip(data["columns"], row)) for row in data["data"]]
    if isinstance(data, dict):  # columnar: {column: [values]}
        columns = list(data.values())
        if not all(isinstance(c, list) and len(c) == len(columns[0]) for c in columns):
            raise BadRequest(400, f"{keys[0]} as columns needs lists of equal length")
        return [dict(zip(data, values)) for values in zip(*columns)]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    raise BadRequest(400, f"{keys[0]} must be a list of rows like {{\"query\": \"...\"}} or a mapping of columns")


def check_json(content_type: str) -> None:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, f"send Content-Type: application/json (got {content_type or 'none'!r})")


def check_request(body: bytes, content_type: str, max_rows: int, max_pixels: int = 1 << 62) -> None:
    """Raise BadRequest (400, 413, 415) for a body the model should never see."""
    check_json(content_type)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"the body is not JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise BadRequest(400, "the body is not JSON this server reads (nested too deeply)") from None
    records = records_of(payload)
    if len(records) > max_rows:
        raise BadRequest(413, f"{len(records)} rows exceed the limit of {max_rows} per request (serve.max_rows)")
    try:
        kinds = check_rows(records)
    except RequestError as e:
        raise BadRequest(400, e.message) from None
    for i, (row, kind) in enumerate(zip(records, kinds)):
        if kind == "page":
            check_pixels(row["image"], max_pixels, f"row {i}")


def check_pixels(b64: str, max_pixels: int, where: str) -> None:
    """BadRequest 413 for an image larger than `max_pixels` (its header read, nothing decoded); 400 for one that
    is not an image."""
    import base64
    import binascii
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(b64, validate=True))) as img:
            w, h = img.size
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        raise BadRequest(400, f"{where}: 'image' is not a base64 PNG or JPEG") from None
    if w * h > max_pixels:
        raise BadRequest(413, f"{where}: the image is {w} x {h} = {w * h} pixels, over the limit of {max_pixels} "
                              "(serve.max_image_pixels)")


def error_body(status: int, message: str) -> bytes:
    code = {405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
            500: "INTERNAL_ERROR", 503: "UNAVAILABLE"}.get(status, "BAD_REQUEST")
    return json.dumps({"error_code": code, "message": message}).encode()


def one_line(body: bytes) -> str:
    """The reason in an MLflow error body: our RequestError's line when present, else the message's first line."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")
    message = message.rsplit("\nError: ", 1)[-1]  # MLflow prefixes the whole input data to a predict error
    return (message.strip().splitlines() or ["the model could not answer this request"])[0][:300]


async def _reply(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI wrapper: answers `POST /search` itself; limits and checks `POST /invocations`, and strips the scoring
    app's error bodies."""

    def __init__(self, app, max_bytes: int, max_rows: int, max_pixels: int = 1 << 62, searcher=None):
        self.app, self.max_bytes, self.max_rows = app, max_bytes, max_rows
        self.max_pixels, self.searcher = max_pixels, searcher

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in ("/invocations", "/search"):
            return await self.app(scope, receive, send)
        headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope.get("method", "POST") != "POST":
                raise BadRequest(405, f"{scope['path']} takes POST")
            body = await self._body(headers, receive)
            if scope["path"] == "/search":
                return await self._search(body, headers.get(b"content-type", ""), send)
            check_request(body, headers.get(b"content-type", ""), self.max_rows, self.max_pixels)
        except BadRequest as e:
            return await _reply(send, e.status, error_body(e.status, e.message))
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, _Stripper(send))

    async def _search(self, body: bytes, content_type: str, send) -> None:
        import anyio

        from pipeline.serve.search_api import SearchError, answer, parse_search

        check_json(content_type)
        if self.searcher is None:
            raise BadRequest(503, "no collection to search: run `python -m pipeline.serve index`, then restart")
        try:
            queries, k, stages = parse_search(body, self.max_rows)
            result = await anyio.to_thread.run_sync(answer, self.searcher, queries, k, stages)
        except SearchError as e:
            raise BadRequest(e.status, e.message) from None
        except Exception:  # a fault of ours: logged in full here, one line to the client
            log.exception("/search failed")
            raise BadRequest(500, "the search failed on the server (its log has the details)") from None
        await _reply(send, 200, json.dumps(result).encode())

    async def _body(self, headers: dict, receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise BadRequest(413, f"the body has {int(declared)} bytes, over the limit of {self.max_bytes} bytes "
                                  "(serve.max_request_mb)")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away")
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                raise BadRequest(413, f"the body is over the limit of {self.max_bytes} bytes (serve.max_request_mb)")
        return b"".join(chunks)


class _Stripper:
    """Wraps `send`: an error response's body becomes {"error_code", "message": one line} (logged in full here)."""

    def __init__(self, send):
        self.send, self.start, self.parts = send, None, []

    async def __call__(self, message):
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None:
            return await self.send(message)
        self.parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.parts)
        log.warning("request failed (%d): %s", self.start["status"], body[:2000].decode(errors="replace"))
        await _reply(self.send, self.start["status"], error_body(self.start["status"], one_line(body)))


def serve(cfg) -> None:
    """Serve the alias's variant on serve.host:serve.port until stopped (SIGINT/SIGTERM): /invocations (vectors) and
    /search over the live collection (when there is one: else /search answers 503)."""
    with setting_up():  # requests' garbage collections then leave the libraries, model and collection alone
        import uvicorn
        from mlflow.pyfunc import scoring_server

        from pipeline.serve import deploy
        from pipeline.serve.search import Searcher

        uri, version = deploy.resolve(cfg)
        model = deploy.load_pyfunc(cfg, uri)
        searcher = Searcher(model.unwrap_python_model().retriever, deploy.target(cfg), cfg.serve, uri, version)
        try:
            searcher.engine()  # open (and, for Edge, hold) the live collection now: a problem shows at start
        except ValueError as e:
            log.warning("/search will answer 503 until there is a collection to search: %s", e)
        s = cfg.serve
        guarded = RequestGuard(scoring_server.init(model), int(s.max_request_mb * 2**20), s.max_rows,
                               s.max_image_pixels, searcher)
    log.info("serving %s (v%s) on http://%s:%d (/search, /invocations; at most %d rows, %g MiB per request)", uri,
             version, s.host, s.port, s.max_rows, s.max_request_mb)
    uvicorn.run(guarded, host=s.host, port=s.port, log_level="info")
