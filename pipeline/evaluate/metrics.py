"""IR metrics over a ranked run via pytrec_eval: nDCG@5/10, Recall@1/5/10, MRR@10, per query and averaged.

Runs and qrels are trec_eval dicts: run {qid: {docid: score}}, qrels {qid: {docid: grade}}. trec_eval ranks
a query's documents by score descending and breaks ties by document id descending; `ranked()` applies the
same rule, so truncation for MRR@10 keeps exactly the documents trec_eval would rank first.
"""

from __future__ import annotations

import pytrec_eval

# Our metric name -> trec_eval measure key.
MEASURES = {
    "ndcg_at_5": "ndcg_cut_5",
    "ndcg_at_10": "ndcg_cut_10",
    "recall_at_1": "recall_1",
    "recall_at_5": "recall_5",
    "recall_at_10": "recall_10",
}
METRICS = [*MEASURES, "mrr_at_10"]


def ranked(scores: dict[str, float]) -> list[str]:
    """Document ids in trec_eval's order: score descending, ties by document id descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def top_k(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """Each query's top-k documents in trec_eval's order (the rest dropped)."""
    return {q: {d: docs[d] for d in ranked(docs)[:k]} for q, docs in run.items()}


def per_query(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """{qid: {metric: value}} for every query of `run` that has judgements (trec_eval skips the others).

    MRR@10 is trec_eval's recip_rank on the run truncated to each query's top 10.
    """
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10", "recall.1,5,10"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top_k(run, 10))
    out = {}
    for q, vals in cut.items():
        row = {name: float(vals[key]) for name, key in MEASURES.items()}
        row["mrr_at_10"] = float(rr.get(q, {}).get("recip_rank", 0.0))
        out[q] = row
    return out


def mean_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Every metric of METRICS averaged over the judged queries of `run` (0.0 for each if there are none)."""
    rows = per_query(run, qrels)
    if not rows:
        return {m: 0.0 for m in METRICS}
    return {m: sum(r[m] for r in rows.values()) / len(rows) for m in METRICS}


def chance_ndcg_at_5(pages: int) -> float:
    """Expected nDCG@5 of a random ranking of `pages` pages when one page is relevant: sum_{r<=5} 1/(pages log2(r+1))."""
    import math

    return sum(1 / math.log2(r + 1) for r in range(1, min(5, pages) + 1)) / pages
