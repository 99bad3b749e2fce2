"""A Qdrant server or cluster through qdrant-client (the same data model as Edge; sharding and replication are the
server's). The collection's metadata lives in Qdrant's own collection metadata. qdrant-client's local mode (a path
instead of a URL) runs this same code without a server: the tests use it."""

from __future__ import annotations

from typing import Any

from pipeline.model.budgets import Budget
from pipeline.serve.engines.qdrant import HNSW_EF_CONSTRUCT, HNSW_M, ScrollingReads, single


def _m():
    from qdrant_client import models

    return models


def vector_params(budget: Budget):
    """Named-vector parameters of a budget (see pipeline/serve/engines/qdrant.py)."""
    m = _m()
    common = dict(size=budget.dim, distance=m.Distance.DOT, datatype=m.Datatype.FLOAT16)
    if single(budget):
        return m.VectorParams(**common, hnsw_config=m.HnswConfigDiff(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT))
    return m.VectorParams(**common, multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                          hnsw_config=m.HnswConfigDiff(m=0))


class ClientBackend(ScrollingReads):
    """The collection `name` (a collection or an alias) on the server `client` talks to."""

    def __init__(self, client, name: str):
        self.client, self.name = client, name
        if not client.collection_exists(name):
            raise ValueError(f"no Qdrant collection or alias {name!r} on the server")

    @classmethod
    def create(cls, client, name: str, budgets: list[Budget], meta: dict) -> "ClientBackend":
        client.create_collection(name, vectors_config={str(b): vector_params(b) for b in budgets}, metadata=meta)
        return cls(client, name)

    def metadata(self) -> dict:
        return dict(self.client.get_collection(self.name).config.metadata or {})

    def set_metadata(self, meta: dict) -> None:
        self.client.update_collection(self.name, metadata=meta)

    def upsert(self, points: list[tuple[str, dict, dict]]) -> None:
        m = _m()
        self.client.upsert(self.name, [m.PointStruct(id=i, vector=v, payload=p) for i, v, p in points], wait=True)

    def _scroll(self, flt, with_vectors: bool, offset: Any, limit: int):
        return self.client.scroll(self.name, scroll_filter=flt, limit=limit, offset=offset, with_payload=True,
                                  with_vectors=with_vectors)

    def _models(self):
        return _m()

    def _retrieve(self, ids: list[str]):
        return self.client.retrieve(self.name, ids, with_payload=True)

    def delete(self, ids: list[str]) -> None:
        self.client.delete(self.name, points_selector=_m().PointIdsList(points=ids), wait=True)

    def query(self, plans: list[list[tuple[str, Any, int]]]) -> list[list[tuple[str, float, dict]]]:
        """One nested prefetch per plan (first stage innermost), sent as one batch."""
        m = _m()
        requests = []
        for plan in plans:
            inner = None
            for name, vector, limit in plan[:-1]:
                inner = m.Prefetch(query=vector, using=name, limit=limit, prefetch=inner)
            name, vector, limit = plan[-1]
            requests.append(m.QueryRequest(query=vector, using=name, limit=limit, prefetch=inner, with_payload=True))
        answers = self.client.query_batch_points(self.name, requests=requests)
        return [[(str(p.id), p.score, p.payload) for p in a.points] for a in answers]

    def count(self) -> int:
        return self.client.count(self.name, exact=True).count

    def optimize(self) -> None:
        """The server builds its indexes itself."""

    def close(self) -> None:
        """The client stays open for the process (a server connection or a local-mode store)."""
