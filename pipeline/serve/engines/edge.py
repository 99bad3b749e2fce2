"""Qdrant Edge (qdrant-edge-py): Qdrant's storage and search engine in this process, no server. A collection is a
directory: `shard/` (the Edge shard) and `collection.json` (its metadata: info, budgets, content fingerprint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.layout.files import atomic_write
from pipeline.model.budgets import Budget
from pipeline.serve.engines.qdrant import HNSW_EF_CONSTRUCT, HNSW_M, ScrollingReads, single

META = "collection.json"


class CollectionBusy(ValueError):
    """Another process holds the Edge collection (its write-ahead log is locked)."""


def _q():
    import qdrant_edge

    return qdrant_edge


def vector_params(budget: Budget):
    """Named-vector parameters of a budget (see pipeline/serve/engines/qdrant.py)."""
    q = _q()
    common = dict(size=budget.dim, distance=q.Distance.Dot, datatype=q.VectorStorageDatatype.Float16)
    if single(budget):
        return q.EdgeVectorParams(**common, hnsw_config=q.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                                                           full_scan_threshold=1000))
    return q.EdgeVectorParams(**common, multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
                              hnsw_config=q.HnswIndexConfig(m=0, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=1))


class EdgeBackend(ScrollingReads):
    """The Edge shard of the collection directory `directory` (create() makes a new one)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / META).is_file() or not (self.directory / "shard").is_dir():
            raise ValueError(f"{self.directory}: no Qdrant Edge collection here ({META} and shard/)")
        try:
            self.shard = _q().EdgeShard.load(str(self.directory / "shard"))
        except Exception as e:  # the Rust side raises a plain Exception; the usual one: another process has it
            if "WouldBlock" in str(e):
                raise CollectionBusy(f"{self.directory}: the collection is open in another process (a running "
                                     "`serve http`?): Qdrant Edge lives in one process; stop it, or deploy on a Qdrant "
                                     "server (serve.qdrant_url)") from None
            raise ValueError(f"{self.directory}: Qdrant Edge cannot open the collection ({str(e).splitlines()[0]})")

    @classmethod
    def create(cls, directory: str | Path, budgets: list[Budget], meta: dict) -> "EdgeBackend":
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=False)
        config = _q().EdgeConfig(vectors={str(b): vector_params(b) for b in budgets})
        _q().EdgeShard.create(str(d / "shard"), config).close()
        atomic_write(d / META, json.dumps(meta))
        return cls(d)

    def metadata(self) -> dict:
        return json.loads((self.directory / META).read_text())

    def set_metadata(self, meta: dict) -> None:
        self.shard.flush()  # the points first: the fingerprint never runs ahead of what is on disk
        atomic_write(self.directory / META, json.dumps(meta))

    def upsert(self, points: list[tuple[str, dict, dict]]) -> None:
        q = _q()
        self.shard.update(q.UpdateOperation.upsert_points([q.Point(i, v, p) for i, v, p in points]))

    def _scroll(self, flt, with_vector: bool, offset: Any, limit: int):
        q = _q()
        return self.shard.scroll(q.ScrollRequest(offset=offset, limit=limit, filter=flt, with_payload=True,
                                                 with_vector=with_vector))

    def _models(self):
        return _q()

    def _retrieve(self, ids: list[str]):
        return self.shard.retrieve(ids, True, False)

    def delete(self, ids: list[str]) -> None:
        self.shard.update(_q().UpdateOperation.delete_points(ids))

    def query(self, plans: list[list[tuple[str, Any, int]]]) -> list[list[tuple[str, float, dict]]]:
        """One nested prefetch per plan (first stage innermost), all planned as one batch."""
        q = _q()
        requests = []
        for plan in plans:
            inner = None
            for name, vector, limit in plan[:-1]:
                inner = q.Prefetch(limit=limit, query=q.Query.Nearest(vector, using=name),
                                   prefetches=[inner] if inner else None)
            name, vector, limit = plan[-1]
            requests.append(q.QueryRequest(limit=limit, query=q.Query.Nearest(vector, using=name),
                                           prefetches=[inner] if inner else None, with_payload=True))
        answers = self.shard.query_batch(q.QueryBatchRequest(requests))
        return [[(str(p.id), p.score, p.payload) for p in points] for points in answers]

    def count(self) -> int:
        return self.shard.count(_q().CountRequest(exact=True))

    def optimize(self) -> None:
        """Build the HNSW graphs and merge segments (after a bulk load)."""
        self.shard.optimize()

    def close(self) -> None:
        self.shard.flush()
        self.shard.close()
