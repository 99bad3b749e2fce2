"""What the suite's model server (tests/serve/conftest.py) serves: its alias, request limits, stored budgets and
cascade, and the one way the tests POST to it."""

import json
import urllib.error
import urllib.request

ALIAS = "http"
LIMITS = {"max_rows": 4, "max_request_mb": 0.25, "max_image_pixels": 200 * 200}
SERVE = ["serve.budgets=[L2-d32-page, L2-d32-p2-bin, L2-d32-p2, L1-d16-p4]",
         "serve.cascade=[[L2-d32-page, 8], [L2-d32-p2, 5]]"]


def post(port: int, path: str, body, content_type: str = "application/json") -> tuple[int, dict]:
    """POST `body` (bytes, or an object sent as JSON) to 127.0.0.1:`port``path`: (HTTP status, JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
