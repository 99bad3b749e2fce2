"""Metrics agree with pytrec_eval and with plain-Python hand computations; trec_eval's tie rule is ours."""

import math
import random

import pytest
import pytrec_eval
import torch

from pipeline.evaluate.cost import bytes_per_page
from pipeline.evaluate.metrics import METRICS, mean_metrics, per_query, ranked
from pipeline.model.pooling import apply_budget, normalize
from pipeline.model.vectors import MultiVector
from tests.helpers.reference import hand_metrics, pooled_counts


@pytest.fixture(scope="module")
def fixed_case():
    """30 queries over 40 documents, continuous random scores (tie-free), graded judgements 0..2."""
    rng = random.Random(7)
    docs = [f"d{i:02d}" for i in range(40)]
    run, qrels = {}, {}
    for q in range(30):
        qid = f"q{q}"
        run[qid] = {d: rng.random() for d in rng.sample(docs, 25)}
        judged = rng.sample(docs, 4)
        qrels[qid] = {d: rng.choice([0, 1, 2]) for d in judged}
        qrels[qid][judged[0]] = rng.choice([1, 2])  # at least one relevant document
    return run, qrels


def test_metrics_equal_pytrec_eval_and_hand_computation(fixed_case):
    run, qrels = fixed_case
    ours = per_query(run, qrels)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10", "recall.1,5,10"}).evaluate(run)
    for q in run:
        assert ours[q]["ndcg_at_5"] == pytest.approx(direct[q]["ndcg_cut_5"], abs=1e-9)
        assert ours[q]["recall_at_10"] == pytest.approx(direct[q]["recall_10"], abs=1e-9)
        order = sorted(run[q], key=run[q].get, reverse=True)
        hand = hand_metrics(order, qrels[q])
        for m in METRICS:
            assert ours[q][m] == pytest.approx(hand[m], abs=1e-9), (q, m)
    means = mean_metrics(run, qrels)
    for m in METRICS:
        assert means[m] == pytest.approx(sum(r[m] for r in ours.values()) / len(ours), abs=1e-12)
    assert 0.0 < means["ndcg_at_5"] < 1.0 and means["recall_at_1"] < means["recall_at_10"]


def test_small_ndcg_by_hand():
    """Graded case worked on paper: ranking a, b, c with grades 0, 2, 1 (d: grade 1, not retrieved)."""
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7}}
    qrels = {"q": {"a": 0, "b": 2, "c": 1, "d": 1}}
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    got = mean_metrics(run, qrels)
    assert got["ndcg_at_5"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert got["mrr_at_10"] == pytest.approx(0.5)
    assert got["recall_at_1"] == 0.0 and got["recall_at_5"] == pytest.approx(2 / 3)


def test_ties_follow_trec_eval_rule_doc_id_descending():
    """All scores tied: trec_eval ranks by doc id descending; MRR@10 truncation must keep those same ten."""
    docs = [f"d{i:02d}" for i in range(15)]
    run = {"q": {d: 1.0 for d in docs}}
    assert ranked(run["q"]) == sorted(docs, reverse=True)
    for rel_doc, expected_rank in [("d14", 1), ("d05", 10), ("d04", None)]:
        qrels = {"q": {rel_doc: 1}}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"]["recip_rank"]
        assert rr == pytest.approx(1.0 / (15 - int(rel_doc[1:])))
        assert mean_metrics(run, qrels)["mrr_at_10"] == pytest.approx(1.0 / expected_rank if expected_rank else 0.0)


def bytes_per_page_from_grids(grids: torch.Tensor, dim: int, pool: int, precision: str = "fp16") -> float:
    """Mean index bytes per page predicted from the patch grids alone."""
    return bytes_per_page(pooled_counts(grids, pool), dim, precision)


def test_bytes_per_page_exact_against_stored_vectors():
    """Grids (some ragged) -> the count apply_budget really stores, times dim, times 2 bytes (float16)."""
    torch.manual_seed(0)
    grids = torch.tensor([[4, 4], [3, 5], [1, 7], [5, 2]])
    n = int((grids[:, 0] * grids[:, 1]).max())
    vectors = normalize(torch.randn(len(grids), n, 64))
    mask = torch.arange(n)[None] < (grids[:, 0] * grids[:, 1])[:, None]
    mv = MultiVector(vectors, mask, grids)
    for dim, pool in [(64, 1), (32, 2), (16, 4), (16, 3)]:
        stored = apply_budget(mv, dim, pool)
        counts = stored.mask.sum(1)
        assert torch.equal(counts, pooled_counts(grids, pool))
        assert bytes_per_page(counts, dim) == bytes_per_page_from_grids(grids, dim, pool)
        assert bytes_per_page(counts, dim) == float(counts.sum()) * dim * 2 / len(grids)
    # By hand: a 4 x 4 page at pool 2 keeps 4 vectors; 4 x 32 dims x 2 bytes = 256 bytes.
    assert bytes_per_page_from_grids(torch.tensor([[4, 4]]), 32, 2) == 256.0
    assert bytes_per_page_from_grids(torch.tensor([[3, 5]]), 16, 2, "int8") == 6 * (16 + 2)  # + a float16 scale
    assert bytes_per_page_from_grids(torch.tensor([[3, 5]]), 16, 2, "bin") == 6 * 2  # 16 sign bits


def test_chance_ndcg_matches_random_rankings():
    """The closed form against pytrec_eval over every rank of the one relevant page (a uniform random ranking)."""
    from pipeline.evaluate.metrics import chance_ndcg_at_5, mean_metrics

    for n in (3, 42):
        values = []
        for rank in range(n):
            docs = {f"d{i}": float(n - i) for i in range(n)}  # d0 first ... d{n-1} last
            values.append(mean_metrics({"q": docs}, {"q": {f"d{rank}": 1}})["ndcg_at_5"])
        assert chance_ndcg_at_5(n) == pytest.approx(sum(values) / n, rel=1e-9)
