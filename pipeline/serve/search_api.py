"""`POST /search`: {"queries": ["..."], "k": 10} with an optional "budget" ("L2-d32-p2", one stage) or "cascade"
([["L4-d128-page", 200], ["L4-d128-p1", 10]]) -> {"results": [[{"key", "score", "doc", "page", "shard"}, ...] per
query], "stages": [[budget, limit], ...], "model_uri", "version"}. A request that does not fit is refused in one
line (400; 413 for too many queries; 409 when the live collection was encoded by another version than this server
runs; 503 when there is no collection yet) before any query is encoded."""

from __future__ import annotations

import json
from typing import Any

from pipeline.model.budgets import Budget

MAX_K = 1000  # results per query a request may ask for


class SearchError(Exception):
    """A /search request refused: HTTP `status` and one line of why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _budget(value: Any, where: str) -> Budget:
    try:
        return Budget.parse(value)
    except (ValueError, TypeError) as e:
        raise SearchError(400, f"{where}: {e}") from None


def parse_search(body: bytes, max_queries: int) -> tuple[list[str], int, list[tuple[Budget, int]] | None]:
    """(queries, k, stages or None for the server's cascade) of a /search body; SearchError when it does not fit."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise SearchError(400, "the body is not JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SearchError(400, f"the body is not JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict):
        raise SearchError(400, 'the body must be a JSON object like {"queries": ["..."], "k": 10}')
    unknown = sorted(set(payload) - {"queries", "k", "budget", "cascade"})
    if unknown:
        raise SearchError(400, f"unknown field {', '.join(map(repr, unknown))}: the fields are 'queries', 'k', "
                               "'budget' and 'cascade'")
    queries, k = payload.get("queries"), payload.get("k", 10)
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise SearchError(400, "'queries' must be a non-empty list of non-empty strings")
    if len(queries) > max_queries:
        raise SearchError(413, f"{len(queries)} queries exceed the limit of {max_queries} per request (serve.max_rows)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SearchError(400, f"'k' must be an integer from 1 to {MAX_K}, got {k!r}")
    if "budget" in payload and "cascade" in payload:
        raise SearchError(400, "give 'budget' or 'cascade', not both")
    if "budget" in payload:
        return queries, k, [(_budget(payload["budget"], "budget"), k)]
    if "cascade" not in payload:
        return queries, k, None
    stages = payload["cascade"]
    if not isinstance(stages, list) or not stages or not all(isinstance(s, list) and len(s) == 2 for s in stages):
        raise SearchError(400, "'cascade' must be a list of [budget, limit] pairs")
    out = []
    for i, (budget, limit) in enumerate(stages):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SearchError(400, f"cascade[{i}]: the limit must be a positive integer, got {limit!r}")
        out.append((_budget(budget, f"cascade[{i}]"), limit))
    return queries, k, out


def answer(searcher, queries: list[str], k: int, stages: list[tuple[Budget, int]] | None) -> dict:
    """Run the search; SearchError for what the collection or the request's budgets cannot do."""
    from pipeline.serve.search import VersionMismatch

    try:
        searcher.engine()
    except VersionMismatch as e:
        raise SearchError(409, str(e)) from None
    except ValueError as e:
        raise SearchError(503, str(e)) from None
    try:
        plan = searcher.plan(k, stages)
        hits = searcher.search(queries, k, stages)
    except ValueError as e:  # a budget the variant cannot produce, or the collection does not store
        raise SearchError(400, str(e)) from None
    shown = ("doc", "page", "shard")
    return {"results": [[{"key": h.key, "score": h.score, **{f: h.payload.get(f) for f in shown}} for h in row]
                        for row in hits],
            "stages": [[str(b), n] for b, n in plan], "model_uri": searcher.model_uri, "version": searcher.version}
