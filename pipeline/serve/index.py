"""Indexing a served variant's pages: the budgets a collection stores, and pages encoded once per batch (at the
deepest exit any stored budget needs, every budget cut from that pass) upserted into an engine."""

from __future__ import annotations

import logging
from typing import Iterable, Iterator

from tqdm import tqdm

from pipeline.model.budgets import Budget
from pipeline.serve.engines.base import Engine, Page, Stage

log = logging.getLogger(__name__)


def resolve(budget: Budget, retriever) -> Budget:
    """`budget` on the served variant (open layers/width filled); ValueError (one line) when the variant cannot
    produce it: every stored budget must exit at one of its exits and be at most its width."""
    b = budget.resolve(retriever.exits, retriever.dim)
    if b.layers not in retriever.exits or b.dim > retriever.dim:
        raise ValueError(f"budget {b} is out of reach of the served variant (exits {retriever.exits}, width "
                         f"{retriever.dim}): serve a variant with more layers or width, or drop it")
    return b


def stored_budgets(serve, retriever) -> list[Budget]:
    """serve.budgets, or the cascade's budgets and the variant's own, resolved, in order, each once."""
    listed = serve.budgets or [b for b, _ in serve.cascade] + [retriever.default_budget]
    return list(dict.fromkeys(resolve(b, retriever) for b in listed))


def cascade(serve, retriever, k: int, stages: list[tuple[Budget, int]] | None = None) -> list[Stage]:
    """The search stages: `stages` (a request's), else serve.cascade, else the variant's own budget alone; the last
    stage keeps `k` pages (at most what the stage before it keeps)."""
    chosen = stages or serve.cascade or [(retriever.default_budget, k)]
    out = [(resolve(b, retriever), n) for b, n in chosen]
    out[-1] = (out[-1][0], k)
    if len(out) > 1 and k > out[-2][1]:
        raise ValueError(f"k={k} is more than the cascade's previous stage keeps ({out[-2][1]})")
    return out


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def index_pages(engine: Engine, retriever, pages: Iterable, batch_size: int = 16, progress: bool = True) -> int:
    """Encode `pages` (objects with key, doc, page, shard, image) at every budget `engine` stores, one forward per
    batch, and upsert them; returns how many pages were written."""
    floats = list(dict.fromkeys(b.fp16 for b in engine.budgets))  # precision is the engine's: one vector per cut
    done = 0
    with tqdm(desc="index pages", unit="page", disable=not progress) as bar:
        for batch in _batches(pages, batch_size):
            vectors = retriever.embed_budgets(floats, pages=[p.image for p in batch], batch_size=batch_size)
            engine.upsert([Page(p.key, p.doc, p.page, p.shard, {b: v[b.fp16] for b in engine.budgets})
                           for p, v in zip(batch, vectors)])
            done += len(batch)
            bar.update(len(batch))
    return done


def query_vectors(retriever, texts: list[str], stages: list[Stage], batch_size: int = 16) -> list[dict]:
    """Per query {budget: its float vectors [n, dim]} at every stage's budget, from one forward per batch."""
    floats = list(dict.fromkeys(b.fp16 for b, _ in stages))
    encoded = retriever.embed_budgets(floats, queries=texts, batch_size=batch_size)
    return [{b: v[b.fp16] for b, _ in stages} for v in encoded]
