"""Evaluate one retriever over a grid of budgets: encode pages and queries once at every needed exit, apply each
(width, pool), store pages at each precision, score with masked MaxSim from the stored codes, rank, and measure
quality (pytrec_eval), bytes/page and encode time; and cascades over those budgets (cheap candidates re-ranked at
larger budgets), with their ms/query."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from pipeline.evaluate.cost import bytes_per_page, time_per_item
from pipeline.evaluate.metrics import mean_metrics
from pipeline.model.budgets import Budget
from pipeline.model.maxsim import maxsim_chunked
from pipeline.model.pooling import apply_budget
from pipeline.model.precision import StoredPages
from pipeline.model.vectors import MultiVector

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """An eval set encoded at full width: pages[exit] [P, N, D], queries[exit] [Q, Nq, D], relevance judgements."""

    page_keys: list[str]
    pages: dict[int, MultiVector]
    queries: dict[int, MultiVector]
    qids: list[str]
    qrels: dict[str, dict[str, int]]
    sample_images: list  # the first pages (PIL), kept for timing
    sample_texts: list[str]


def _batches(it, size):
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def encode_eval_set(retriever, eval_set, exits: list[int], batch_size: int, keep: int = 16,
                    progress: bool = True) -> Encoded:
    """Encode every page and query of `eval_set` at `exits` (one forward per batch serves all exits)."""
    keys, texts, qids, qrels, sample = [], [], [], {}, []
    parts: dict[int, list[MultiVector]] = {e: [] for e in exits}
    bar = tqdm(total=getattr(eval_set, "num_pages", None), desc="eval pages", unit="page", disable=not progress)
    for batch in _batches(eval_set.pages(), batch_size):
        out = retriever.encode_pages(retriever.processor.pages([p.image for p in batch]).to(retriever.device), exits)
        for e in exits:
            parts[e].append(out[e].to("cpu", dtype=torch.float32))
        for page in batch:
            keys.append(page.key)
            for i, q in enumerate(page.queries):
                qid = f"{page.key}#{i}"
                qids.append(qid)
                texts.append(q)
                qrels[qid] = {page.key: 1}
            if len(sample) < keep:
                sample.append(page.image)
        bar.update(len(batch))
    bar.close()
    if not keys or not texts:
        raise ValueError(f"eval set {eval_set.name} has {len(keys)} pages and {len(texts)} queries: nothing to score")
    qparts: dict[int, list[MultiVector]] = {e: [] for e in exits}
    for chunk in _batches(texts, batch_size):
        out = retriever.encode_queries(retriever.processor.queries(chunk).to(retriever.device), exits)
        for e in exits:
            qparts[e].append(out[e].to("cpu", dtype=torch.float32))
    pages = {e: MultiVector.cat(parts[e]) for e in exits}
    queries = {e: MultiVector.cat(qparts[e]) for e in exits}
    return Encoded(keys, pages, queries, qids, qrels, sample, texts[:keep])


def scores_at(enc: Encoded, budget: Budget) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query's score for every page at `budget` [Q, P] and the stored vector count per page [P]. Page
    vectors are stored at the budget's precision and scored from those codes, so the scores are those a stored
    index gives."""
    p = apply_budget(enc.pages[budget.layers], budget.dim, budget.pool)
    q = apply_budget(enc.queries[budget.layers], budget.dim, 1)
    return maxsim_chunked(q, StoredPages.of(p, budget.precision)), p.mask.sum(1)


def stored_counts(enc: Encoded, budget: Budget) -> torch.Tensor:
    """Vectors each page stores at `budget` [P]."""
    return apply_budget(enc.pages[budget.layers], budget.dim, budget.pool).mask.sum(1)


def ranked_run(enc: Encoded, top_s: torch.Tensor, top_i: torch.Tensor) -> dict[str, dict[str, float]]:
    """{qid: {page key: score}} from per-query scores and page indices [Q, k]."""
    return {qid: {enc.page_keys[i]: s for i, s in zip(i_row, s_row)}
            for qid, s_row, i_row in zip(enc.qids, top_s.tolist(), top_i.tolist())}


def run_for_budget(enc: Encoded, budget: Budget, depth: int) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """The ranked run at `budget` ({qid: {page key: score}}, top `depth` per query) and the stored vector count
    per page [P]."""
    scores, counts = scores_at(enc, budget)
    top_s, top_i = scores.topk(min(depth, scores.shape[1]), dim=1)
    return ranked_run(enc, top_s, top_i), counts


def run_cascade(enc: Encoded, stages: list[tuple[Budget, int]]) -> tuple[dict, float]:
    """The ranked run of a cascade (the first stage keeps its `limit` best pages of all, each later stage its
    `limit` best of the previous stage's, at its own budget) and its scoring time per query in ms."""
    began = time.perf_counter()
    keep = None  # [Q, n] page indices the previous stage kept
    for budget, limit in stages:
        scores, _ = scores_at(enc, budget)
        if keep is not None:
            scores = scores.gather(1, keep)
        top_s, order = scores.topk(min(limit, scores.shape[1]), dim=1)
        keep = order if keep is None else keep.gather(1, order)
    ms = 1e3 * (time.perf_counter() - began) / max(len(enc.qids), 1)
    return ranked_run(enc, top_s, keep), ms


@torch.no_grad()
def time_exits(retriever, images: list, texts: list[str], exits: list[int], repeats: int = 2) -> dict[int, dict]:
    """Measured encode cost per exit: {exit: {"encode_ms_per_page", "encode_ms_per_query"}}; each exit runs alone
    (only its layers), on the same pages, after one warm-up call."""
    pages = retriever.processor.pages(images).to(retriever.device)
    queries = retriever.processor.queries(texts).to(retriever.device)
    out = {}
    for e in exits:
        retriever.encode_pages(pages, [e])  # warm-up
        per_page = time_per_item(lambda: retriever.encode_pages(pages, [e]), len(images), repeats)
        per_query = time_per_item(lambda: retriever.encode_queries(queries, [e]), len(texts), repeats)
        out[e] = {"encode_ms_per_page": 1e3 * per_page, "encode_ms_per_query": 1e3 * per_query}
    return out


def evaluate_budgets(retriever, eval_set, budgets: list[Budget], batch_size: int = 16, depth: int = 100,
                     timing_pages: int = 16, progress: bool = True, cascades: list | None = None) -> dict:
    """Quality and cost of every budget on `eval_set` -> {"eval_set", "eval_fingerprint", "pages", "queries",
    "rows": [one dict per budget: budget, layers, dim, pool, precision, metrics, bytes_per_page, ...],
    "cascades": [one dict per cascade: name, stages, metrics, bytes_per_page (every stage's budget stored),
    ms_per_query (scoring)]}."""
    cascades = cascades or []
    exits = sorted({b.layers for b in budgets} | {b.layers for c in cascades for b, _ in c})
    retriever.eval()
    enc = encode_eval_set(retriever, eval_set, exits, batch_size, keep=timing_pages, progress=progress)
    timing = time_exits(retriever, enc.sample_images, enc.sample_texts, exits) if timing_pages > 0 else {}
    rows = []
    for b in tqdm(budgets, desc="budgets", disable=not progress):
        run, counts = run_for_budget(enc, b, depth)
        row = {"budget": str(b), **b.as_dict(), **mean_metrics(run, enc.qrels)}
        row["vectors_per_page"] = float(counts.float().mean())
        row["bytes_per_page"] = bytes_per_page(counts, b.dim, b.precision)
        row.update(timing.get(b.layers, {}))
        rows.append(row)
        log.info("%s nDCG@5 %.4f  %.0f bytes/page", b, row["ndcg_at_5"], row["bytes_per_page"])
    return {"eval_set": eval_set.name, "eval_fingerprint": eval_set.fingerprint, "pages": len(enc.page_keys),
            "queries": len(enc.qids), "rows": rows, "cascades": [cascade_row(enc, c) for c in cascades]}


def cascade_row(enc: Encoded, stages: list[tuple[Budget, int]]) -> dict:
    """One cascade's row: its name ("L4-d128-page:20 > L4-d128-p1:10"), stages, metrics, bytes/page of the
    budgets it stores, ms/query."""
    run, ms = run_cascade(enc, stages)
    stored = {b for b, _ in stages}
    row = {"cascade": " > ".join(f"{b}:{n}" for b, n in stages), "stages": [[str(b), n] for b, n in stages],
           **mean_metrics(run, enc.qrels), "ms_per_query": ms,
           "bytes_per_page": sum(bytes_per_page(stored_counts(enc, b), b.dim, b.precision) for b in stored)}
    log.info("cascade %s nDCG@5 %.4f  %.2f ms/query", row["cascade"], row["ndcg_at_5"], ms)
    return row
