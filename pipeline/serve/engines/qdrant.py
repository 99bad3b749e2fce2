"""A collection in Qdrant: one point per page, one named vector per stored budget, cascades as nested prefetches.

The same data model runs in-process (Qdrant Edge: `edge.py`) or on a Qdrant server or cluster (`client.py`, where
sharding and replication are Qdrant's); this module holds what both share. How a budget is stored:

- a budget that keeps several vectors per page is a multivector (MaxSim comparator) with no HNSW graph (m=0, as
  Qdrant recommends for MaxSim): it is scanned exactly, over all pages or over a previous stage's candidates;
- a budget that keeps one vector per page (pool `page`: the mean of the page's vectors) is a plain vector with an
  HNSW graph: the sublinear first stage of a cascade. A query's vector for it is the sum of its vectors, whose dot
  product with the page vector is exactly MaxSim against a one-vector page;
- every precision is stored as the values `pipeline.model.precision` scores, in Qdrant's float16 storage: fp16 the
  vector; int8 scale x code (rounded to float16: the score differs from ours by at most 2^-11 x query vectors);
  bin the signs +-1 (exact), with the query divided by sqrt(dim) so Qdrant's score is ours.

Each point's payload carries its key, document, page, shard, the registry version that encoded it and its content
digest; the collection's metadata carries the info it was created with and the sum of the digests (its content
fingerprint), checked by `verify()`.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.model.budgets import PAGE, Budget
from pipeline.model.precision import quantize
from pipeline.serve.engines.base import MOD, Hit, Page, Stage, check_stages, page_digest

ID_NAMESPACE = uuid.UUID("6f1c2b1e-3d5a-4e8f-9a7b-2c4d6e8f0a1b")  # point ids: uuid5 of the page key
HNSW_M, HNSW_EF_CONSTRUCT = 16, 128  # the one-vector-per-page budgets' graph


def point_id(key: str) -> str:
    """The stable point id of a page key (the same key always lands on the same point)."""
    return str(uuid.uuid5(ID_NAMESPACE, key))


def single(budget: Budget) -> bool:
    """Whether the budget keeps one vector per page (stored as a plain vector with an HNSW graph)."""
    return budget.pool >= PAGE


class ScrollingReads:
    """The reads both back ends share (Edge and qdrant-client have parallel APIs): a back end gives `_models()` (its
    module of Filter, FieldCondition and MatchAny), `_retrieve(ids)` and `_scroll(filter, with_vectors, offset, limit)`."""

    def payloads(self, ids: list[str] | None = None, docs: list[str] | None = None) -> dict[str, dict]:
        """{point id: payload} of the points `ids`, or of every point of the documents `docs`."""
        if ids is not None:
            return {str(r.id): r.payload for r in self._retrieve(ids)} if ids else {}
        m = self._models()
        flt = m.Filter(must=[m.FieldCondition(key="doc", match=m.MatchAny(any=list(docs)))])
        out, offset = {}, None
        while True:
            rows, offset = self._scroll(flt, False, offset, 1024)
            out.update({str(r.id): r.payload for r in rows})
            if offset is None:
                return out

    def vectors(self, offset: Any, limit: int) -> tuple[list[tuple[str, dict, dict]], Any]:
        rows, offset = self._scroll(None, True, offset, limit)
        return [(str(r.id), r.vector, r.payload) for r in rows], offset


def stored_values(budget: Budget, vectors: torch.Tensor) -> np.ndarray:
    """Float vectors [n, dim] -> what Qdrant stores for them at the budget's precision, as float16 [n, dim]."""
    v = vectors.float()
    if budget.precision == "bin":
        return np.where(v.numpy() >= 0, 1.0, -1.0).astype(np.float16)
    return quantize(v, budget.precision).dequantize().numpy().astype(np.float16)


def query_values(budget: Budget, vectors: torch.Tensor) -> list:
    """A query's float vectors [n, dim] -> its query for the budget's named vector (see the module docstring)."""
    q = vectors.float()
    if budget.precision == "bin":
        q = q / math.sqrt(budget.dim)
    return q.sum(0).tolist() if single(budget) else q.tolist()


class Backend(Protocol):
    """What the engine needs of a Qdrant deployment (edge.py, client.py)."""

    def upsert(self, points: list[tuple[str, dict[str, Any], dict]]) -> None: ...

    def payloads(self, ids: list[str] | None = None, docs: list[str] | None = None) -> dict[str, dict]: ...

    def vectors(self, offset: Any, limit: int) -> tuple[list[tuple[str, dict, dict]], Any]: ...

    def delete(self, ids: list[str]) -> None: ...

    def query(self, queries: list[list[tuple[str, Any, int]]]) -> list[list[tuple[str, float, dict]]]: ...

    def count(self) -> int: ...

    def optimize(self) -> None: ...

    def metadata(self) -> dict: ...

    def set_metadata(self, meta: dict) -> None: ...

    def close(self) -> None: ...


class QdrantEngine:
    """A collection on a Backend (see the module docstring); `info` and `budgets` come from its metadata."""

    def __init__(self, backend: Backend):
        self.backend = backend
        meta = backend.metadata()
        self.info = meta["info"]
        self.budgets = [Budget.parse(b) for b in meta["budgets"]]
        self.fingerprint = int(meta["fingerprint"], 16)

    def _save_fingerprint(self) -> None:
        meta = self.backend.metadata()
        meta["fingerprint"] = f"{self.fingerprint:064x}"
        self.backend.set_metadata(meta)

    def _digest(self, key: str, stored: dict[str, np.ndarray]) -> int:
        return page_digest(key, self.info.get("version"), {n: v.tobytes() for n, v in stored.items()})

    def upsert(self, pages: list[Page]) -> None:
        """Add pages, replacing any with the same key (its old content leaves the fingerprint)."""
        latest = {p.key: p for p in pages}  # the last of several pages with one key wins, as in Qdrant
        old = self.backend.payloads(ids=[point_id(k) for k in latest])
        points = []
        for key, p in latest.items():
            stored = {str(b): stored_values(b, p.vectors[b]) for b in self.budgets}
            digest = self._digest(key, stored)
            vectors = {n: (v[0] if single(Budget.parse(n)) else v).tolist() for n, v in stored.items()}
            payload = {**p.payload(), "version": self.info.get("version"), "digest": f"{digest:064x}"}
            points.append((point_id(key), vectors, payload))
            self.fingerprint = (self.fingerprint + digest) % MOD
        for payload in old.values():
            self.fingerprint = (self.fingerprint - int(payload["digest"], 16)) % MOD
        self.backend.upsert(points)
        self._save_fingerprint()

    def delete_documents(self, docs: list[str]) -> int:
        """Remove every page of `docs`; returns how many pages went."""
        gone = self.backend.payloads(docs=docs)
        if gone:
            self.backend.delete(list(gone))
            for payload in gone.values():
                self.fingerprint = (self.fingerprint - int(payload["digest"], 16)) % MOD
            self._save_fingerprint()
        return len(gone)

    def count(self) -> int:
        return self.backend.count()

    def verify(self, batch: int = 1024) -> None:
        """ValueError unless every stored vector hashes to its page's digest and the digests add up to the
        collection's fingerprint (reads every vector: a check to run after indexing or on suspicion)."""
        total, offset = 0, None
        while True:
            rows, offset = self.backend.vectors(offset, batch)
            for pid, vectors, payload in rows:
                stored = {n: np.asarray(v, dtype=np.float16).reshape(-1, Budget.parse(n).dim)
                          for n, v in vectors.items()}
                digest = self._digest(payload["key"], stored)
                if f"{digest:064x}" != payload.get("digest"):
                    raise ValueError(f"page {payload['key']!r}: its stored vectors do not match its digest")
                total = (total + digest) % MOD
            if offset is None:
                break
        if total != self.fingerprint:
            raise ValueError("the collection's pages do not add up to its content fingerprint (pages missing or "
                             "added outside this engine)")

    def search(self, queries: list[dict[Budget, torch.Tensor]], stages: list[Stage]) -> list[list[Hit]]:
        """Per query the last stage's pages, best first (the first stage's candidates re-scored stage by stage)."""
        check_stages(stages, self.budgets)
        plans = [[(str(b), query_values(b, q[b]), n) for b, n in stages] for q in queries]
        return [[Hit(p["key"], score, p) for _, score, p in rows] for rows in self.backend.query(plans)]

    def finish(self) -> None:
        """After a bulk load: build the one-vector budgets' HNSW graphs (Edge; a server does it itself)."""
        self.backend.optimize()

    def close(self) -> None:
        self.backend.close()
