"""The index-scale benchmark's collections: pages from the model's vectors or drawn ones, built into Qdrant Edge (the
serving engine's own upsert path, then optimize) or the flat exact index, and their size on disk.

The flat index is written in one piece from the codes (its constructor and save()): its upsert rewrites the whole
file per call, which is not a bulk loader (see the benchmark's README notes).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.index_scale_vectors import ExitStats, VectorSet, cut, draw_pages
from pipeline.model.budgets import Budget
from pipeline.serve.engines.base import MOD, Page

INFO = {"model_uri": "bench", "version": 1}


@dataclass
class ModelPages:
    """The first `n` pages of the model's vectors."""

    vectors: VectorSet
    n: int
    kind = "model"

    def batch(self, budgets: list[Budget], start: int, stop: int) -> tuple[list[str], dict[Budget, list]]:
        stop = min(stop, self.n)
        return self.vectors.keys[start:stop], {b: self.vectors.items(b.fp16, start, stop) for b in budgets}


@dataclass
class DrawnPages:
    """`n` drawn pages of `count` vectors on a `grid` (see index_scale_vectors), per exit its statistics."""

    stats: dict[int, ExitStats]
    n: int
    count: int
    grid: tuple[int, int]
    seed: int = 0
    kind = "drawn"

    def batch(self, budgets: list[Budget], start: int, stop: int) -> tuple[list[str], dict[Budget, list]]:
        stop = min(stop, self.n)
        out = {}
        for layers in sorted({b.layers for b in budgets}):
            full = draw_pages(self.stats[layers], start, stop, self.count, self.seed + layers)
            out.update({b: cut(full, self.grid, b) for b in budgets if b.layers == layers})
        return [f"drawn-{i:07d}" for i in range(start, stop)], out


def pages_of(keys: list[str], vectors: dict[Budget, list]) -> list[Page]:
    """Pages to upsert; a rendered page's key is <document id>-p<page>."""
    return [Page(k, k.rsplit("-p", 1)[0], 0, "bench", {b: v[i] for b, v in vectors.items()})
            for i, k in enumerate(keys)]


def build_qdrant(directory: Path, budgets: list[Budget], source, batch: int = 1024, progress=None) -> dict:
    """A Qdrant Edge collection of the source's pages through QdrantEngine.upsert (batch pages a call), then
    finish() (optimize: HNSW graphs, segment merge). Returns the seconds of each part."""
    from pipeline.serve.engines.edge import EdgeBackend
    from pipeline.serve.engines.qdrant import QdrantEngine

    meta = {"info": INFO, "budgets": [str(b) for b in budgets], "fingerprint": "0" * 64}
    engine = QdrantEngine(EdgeBackend.create(directory, budgets, meta))
    t0, draw_s = time.perf_counter(), 0.0
    for start in range(0, source.n, batch):
        d0 = time.perf_counter()
        keys, vectors = source.batch(budgets, start, start + batch)
        draw_s += time.perf_counter() - d0
        engine.upsert(pages_of(keys, vectors))
        if progress:
            progress(start + len(keys))
    t1 = time.perf_counter()
    engine.finish()
    t2 = time.perf_counter()
    engine.close()
    t3 = time.perf_counter()
    upsert_s = t1 - t0 - draw_s
    return {"build_s": upsert_s + t3 - t1, "upsert_s": upsert_s, "optimize_s": t2 - t1, "close_s": t3 - t2,
            "vectors_s": draw_s, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def build_flat(directory: Path, budgets: list[Budget], source, batch: int = 8192) -> dict:
    """The flat index of the source's pages, written in one piece: per budget the codes of every page in one
    preallocated tensor (no per-page copies: a million full-budget pages are 4 GB once, not twice), then save()."""
    from pipeline.model.precision import Codes, quantize
    from pipeline.serve.engines.flat import FlatEngine, Shelf

    data, scale, counts = {}, {}, {b: [torch.zeros(1, dtype=torch.long)] for b in budgets}
    keys, build_s, draw_s, row = [], 0.0, 0.0, dict.fromkeys(budgets, 0)
    for start in range(0, source.n, batch):
        d0 = time.perf_counter()
        k, vectors = source.batch(budgets, start, start + batch)
        d1 = time.perf_counter()
        for b in budgets:
            codes = quantize(torch.cat(vectors[b]).float(), b.precision)
            if b not in data:  # every page of a source has as many vectors as its first at a budget
                total = source.n * vectors[b][0].shape[0]
                data[b] = codes.data.new_empty((total, *codes.data.shape[1:]))
                scale[b] = None if codes.scale is None else codes.scale.new_empty((total, *codes.scale.shape[1:]))
            rows = slice(row[b], row[b] + codes.data.shape[0])
            data[b][rows] = codes.data
            if codes.scale is not None:
                scale[b][rows] = codes.scale
            row[b] = rows.stop
            counts[b].append(torch.tensor([v.shape[0] for v in vectors[b]]))
        keys += k
        build_s += time.perf_counter() - d1
        draw_s += d1 - d0
    t0 = time.perf_counter()
    shelves = {b: Shelf(Codes(b.precision, b.dim, data[b][: row[b]], scale[b] if scale[b] is None else
                              scale[b][: row[b]]), torch.cat(counts[b]).cumsum(0)) for b in budgets}
    payloads = [p.payload() for p in pages_of(keys, {})]
    engine = FlatEngine(directory, budgets, dict(INFO), keys, payloads, shelves, 0)
    # the content fingerprint open() verifies: the sum of the page digests, as FlatEngine.verify adds them up
    engine.fingerprint = sum(engine._digest(k, engine._page_codes(i)) for i, k in enumerate(keys)) % MOD
    engine.save()
    return {"build_s": build_s + time.perf_counter() - t0, "vectors_s": draw_s}


@torch.no_grad()
def streamed_truth(source, budget: Budget, queries: list[torch.Tensor], k: int = 10, batch: int = 8192) -> list:
    """The exact top-k page keys per query at an fp16 budget, scored as the flat engine scores (MaxSim over the
    float16 codes) while the pages stream past: for a scale whose flat index does not fit in memory."""
    from pipeline.model.maxsim import topk_stream
    from pipeline.serve.engines.flat import pad

    keys: list[str] = []

    def chunks():
        for start in range(0, source.n, batch):
            k_, vectors = source.batch([budget], start, start + batch)
            keys.extend(k_)
            yield pad([v.half() for v in vectors[budget]])

    _, rows = topk_stream(pad(queries), chunks(), k)
    return [[keys[i] for i in r] for r in rows.tolist()]


def disk_bytes(directory: Path) -> int:
    """Bytes the directory occupies on disk (allocated blocks, as du counts them)."""
    total = 0
    for root, _, files in os.walk(directory):
        for f in files:
            st = os.stat(os.path.join(root, f))
            total += st.st_blocks * 512
    return total


def open_engine(kind: str, directory: Path):
    if kind == "flat":
        from pipeline.serve.engines.flat import FlatEngine

        return FlatEngine.open(directory)
    from pipeline.serve.engines.edge import EdgeBackend
    from pipeline.serve.engines.qdrant import QdrantEngine

    return QdrantEngine(EdgeBackend(directory))


def query_dicts(queries: VectorSet, budgets: list[Budget], n: int) -> list[dict[Budget, torch.Tensor]]:
    """The first n queries as engine.search takes them: {budget: float vectors [n_i, dim]}."""
    return [{b: queries.item(i, b.fp16).float() for b in budgets} for i in range(min(n, len(queries)))]
