"""The engines on drawn vectors (no model): Qdrant Edge and qdrant-client's local mode (the server code path) return
the flat exact index's top-k with its scores at every precision and for one-vector pages, run cascades as the flat
index does, upsert and delete by document, and keep a content fingerprint that catches a corrupted stored vector
(which does change a result: the negative control)."""

import math

import numpy as np
import pytest
import torch

from pipeline.model.budgets import PAGE, Budget
from pipeline.model.pooling import normalize
from pipeline.model.precision import quantize
from pipeline.serve.engines.base import Page
from pipeline.serve.engines.client import ClientBackend
from pipeline.serve.engines.edge import EdgeBackend
from pipeline.serve.engines.flat import FlatEngine
from pipeline.serve.engines.qdrant import QdrantEngine, point_id
from tests.helpers.drawn import BUDGETS, TOLERANCE, draw_pages, draw_queries
from tests.helpers.reference import half, hand_bin, hand_int8, ref_maxsim

def stored_reference(budget: Budget, v: torch.Tensor) -> list[list[float]]:
    """What pipeline.model.precision scores for a page vector, by hand (plain Python)."""
    stored = {"fp16": lambda x: [half(c) for c in x], "int8": hand_int8, "bin": hand_bin}[budget.precision]
    return [stored(row) for row in v.tolist()]


@pytest.fixture(params=["edge", "client"])
def engines(request, tmp_path):
    """(flat oracle, Qdrant engine) over the same 120 pages."""
    pages = draw_pages(120, 0)
    meta = {"info": {"version": 7}, "budgets": [str(b) for b in BUDGETS], "fingerprint": "0" * 64}
    if request.param == "edge":
        backend = EdgeBackend.create(tmp_path / "edge", BUDGETS, meta)
    else:
        from qdrant_client import QdrantClient

        backend = ClientBackend.create(QdrantClient(path=str(tmp_path / "local")), "c", BUDGETS, meta)
    flat, engine = FlatEngine.create(tmp_path / "flat", BUDGETS, {"version": 7}), QdrantEngine(backend)
    for e in (flat, engine):
        e.upsert(pages[:70])
        e.upsert(pages[70:])
    yield flat, engine, pages
    engine.close()


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_top_k_and_scores_equal_the_flat_index_and_the_hand_reference(engines, budget):
    flat, engine, pages = engines
    queries = draw_queries(6, 1)
    want, got = flat.search(queries, [(budget, 10)]), engine.search(queries, [(budget, 10)])
    reference = ref_maxsim([q[budget].tolist() for q in queries], [stored_reference(budget, p.vectors[budget])
                                                                    for p in pages])
    for w, g, row in zip(want, got, reference):
        assert [h.key for h in g] == [h.key for h in w]
        best = sorted(range(len(pages)), key=lambda j: -row[j])[:10]
        assert [h.key for h in w] == [pages[j].key for j in best]  # the oracle is exact
        for h, j in zip(g, best):
            assert h.score == pytest.approx(row[j], abs=3 * TOLERANCE[budget.precision])  # 3 query vectors
        assert g[0].payload["doc"] == pages[best[0]].doc and g[0].payload["version"] == 7


def test_a_cascade_equals_the_flat_cascade_and_keeping_every_page_equals_exact_search(engines):
    flat, engine, pages = engines
    queries = draw_queries(5, 2)
    cascade = [(BUDGETS[4], 60), (BUDGETS[2], 20), (BUDGETS[0], 5)]
    for w, g in zip(flat.search(queries, cascade), engine.search(queries, cascade)):
        assert [h.key for h in g] == [h.key for h in w]
    everything = [(BUDGETS[3], len(pages)), (BUDGETS[1], len(pages)), (BUDGETS[0], 5)]
    exact = engine.search(queries, [(BUDGETS[0], 5)])
    assert [[h.key for h in r] for r in engine.search(queries, everything)] == [[h.key for h in r] for r in exact]
    narrow = [(BUDGETS[3], 3), (BUDGETS[0], 3)]  # a first stage that keeps 3 pages re-ranks only those
    first = engine.search(queries, [(BUDGETS[3], 3)])
    for n, f in zip(engine.search(queries, narrow), first):
        assert {h.key for h in n} == {h.key for h in f}


def test_upsert_replaces_by_key_and_delete_removes_a_document(engines):
    flat, engine, pages = engines
    assert engine.count() == flat.count() == 120
    changed = draw_pages(3, 5)
    changed = [Page(pages[i].key, "new-doc", 99, "s", p.vectors) for i, p in zip((4, 5, 6), changed)]
    for e in (flat, engine):
        e.upsert(changed + draw_pages(2, 6, prefix="extra"))
        e.verify()
    assert engine.count() == flat.count() == 122
    assert engine.delete_documents(["doc3", "nope"]) == flat.delete_documents(["doc3", "nope"]) == 13
    for e in (flat, engine):
        e.verify()
    queries = draw_queries(4, 3)
    for w, g in zip(flat.search(queries, [(BUDGETS[0], 122)]), engine.search(queries, [(BUDGETS[0], 122)])):
        assert [h.key for h in g] == [h.key for h in w] and len(g) == 109
        assert not any(h.payload["doc"] == "doc3" for h in g)
        assert {h.payload["doc"] for h in g if h.key == pages[4].key} == {"new-doc"}


def test_a_corrupted_stored_vector_fails_verify_and_changes_a_result(engines):
    """The negative control: one page's stored vector overwritten behind the engine's back (its digest kept)."""
    _, engine, pages = engines
    queries = draw_queries(1, 4)
    before = engine.search(queries, [(BUDGETS[0], 1)])[0][0]
    victim = next(p for p in pages if p.key == before.key)
    worst = -queries[0][BUDGETS[0]].sum(0, keepdim=True)  # the vector this query likes least
    payload = engine.backend.payloads(ids=[point_id(victim.key)])[point_id(victim.key)]
    vectors = {str(b): (v[0] if b.pool == PAGE else v).tolist() for b, v in
               {b: torch.from_numpy(np.asarray(normalize(worst).numpy(), dtype=np.float32)) for b in BUDGETS}.items()}
    engine.backend.upsert([(point_id(victim.key), vectors, payload)])
    assert engine.search(queries, [(BUDGETS[0], 1)])[0][0].key != before.key  # the result did change
    with pytest.raises(ValueError, match="do not match its digest"):
        engine.verify()


def test_bin_is_stored_as_signs_and_scored_as_our_codes():
    """Qdrant stores +-1 and the query divided by sqrt(dim): its dot product is pipeline.model.precision's bin score."""
    from pipeline.serve.engines.qdrant import query_values, stored_values

    g = torch.Generator().manual_seed(9)
    v, q = normalize(torch.randn(4, 13, generator=g)), normalize(torch.randn(2, 13, generator=g))
    b = Budget(1, 13, 1, "bin")
    ours = quantize(v, "bin").dot(q)
    theirs = torch.tensor(query_values(b, q)) @ torch.from_numpy(stored_values(b, v).astype(np.float32)).T
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)
    assert set(np.unique(stored_values(b, v))) <= {-1.0, 1.0} and math.isclose(float(ours.abs().max()), float(
        theirs.abs().max()), rel_tol=1e-6)
