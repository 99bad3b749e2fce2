"""Budgets: grid order, nested widths, and pooling against a hand computation on the patch grid."""

import pytest
import torch

from pipeline.model import pooling
from pipeline.model.budgets import PAGE, POOL_NAMES, Budget, budget_grid, full_budget, resolve_in
from pipeline.model.pooling import apply_budget, max_cells, normalize, pool_grid
from pipeline.model.vectors import MultiVector
from tests.helpers.reference import pooled_counts, ref_page, ref_pool

GRIDS = [(4, 4), (3, 5), (1, 7), (5, 2)]  # divisible and ragged in both directions


def pages(seed: int = 0, d: int = 12) -> MultiVector:
    g = torch.Generator().manual_seed(seed)
    n = max(h * w for h, w in GRIDS) + 2  # extra padding beyond the largest page
    vectors = normalize(torch.randn(len(GRIDS), n, d, generator=g, dtype=torch.float64))
    mask = torch.tensor([[i < h * w for i in range(n)] for h, w in GRIDS])
    vectors = torch.where(mask[..., None], vectors, torch.full_like(vectors, 9.0))
    return MultiVector(vectors, mask, torch.tensor(GRIDS))


def test_grid_and_parse():
    grid = budget_grid([1, 2, 4], [128, 32], [1, 2])
    assert len(grid) == 12 and grid[0] == Budget(4, 128, 1) == full_budget(grid)
    assert all(Budget.parse(str(b)) == b for b in grid)
    with pytest.raises(ValueError):
        Budget.parse("4-128-1")


@pytest.mark.parametrize("p", [2, 3, 4])
def test_pool_matches_hand_computation(p):
    mv = pages()
    vectors, mask, grids = pool_grid(mv.vectors, mv.mask, mv.grids, p)
    for b, (h, w) in enumerate(GRIDS):
        want = torch.tensor(ref_pool(mv.vectors[b, : h * w].tolist(), h, w, p), dtype=torch.float64)
        k = len(want)
        assert mask[b, :k].all() and not mask[b, k:].any()
        torch.testing.assert_close(vectors[b, :k], want)
        assert grids[b].tolist() == [-(-h // p), -(-w // p)]


def test_device_side_bound_gives_the_same_vectors(monkeypatch):
    """Grids off the host use a shape-only bound on the output length: more padding, identical real cells."""
    mv = pages()
    exact = pool_grid(mv.vectors, mv.mask, mv.grids, 2)
    monkeypatch.setattr(pooling, "_out_cells", lambda grids, n, p: max_cells(n, p))
    bound = pool_grid(mv.vectors, mv.mask, mv.grids, 2)
    assert bound[0].shape[1] >= exact[0].shape[1]
    k = exact[0].shape[1]
    assert torch.equal(bound[1][:, :k], exact[1]) and not bound[1][:, k:].any()
    torch.testing.assert_close(bound[0][:, :k][exact[1]], exact[0][exact[1]])


def test_max_cells_is_a_bound():
    for n in range(1, 40):
        for p in (2, 3, 4):
            brute = max(-(-h // p) * -(-w // p) for h in range(1, n + 1) for w in range(1, n // h + 1))
            assert max_cells(n, p) == brute


def test_masked_cells_do_not_count():
    mv = pages()
    mv.mask[0, 0] = False  # a missing cell: its neighbours' mean excludes it
    vectors, _, _ = pool_grid(mv.vectors, mv.mask, mv.grids, 2)
    want = mv.vectors[0, [1, 4, 5]].mean(0)
    torch.testing.assert_close(vectors[0, 0], want)


@pytest.mark.parametrize("dim,pool", [(12, 1), (8, 1), (4, 2), (8, 3)])
def test_apply_budget_matches_reference(dim, pool):
    mv = pages(1)
    out = apply_budget(mv, dim, pool)
    for b, (h, w) in enumerate(GRIDS):
        want = torch.tensor(ref_page(mv.vectors[b, : h * w].tolist(), h, w, dim, pool), dtype=torch.float64)
        torch.testing.assert_close(out.vectors[b][out.mask[b]], want)


def test_widths_are_nested_and_queries_never_pooled():
    mv = pages(2)
    q = MultiVector(mv.vectors, mv.mask, None)
    d8 = apply_budget(q, 8, 4)
    assert d8.vectors.shape == (len(GRIDS), mv.vectors.shape[1], 8)  # pool ignored for queries
    d4_from_8 = normalize(d8.vectors[..., :4])
    torch.testing.assert_close(apply_budget(q, 4, 1).vectors, d4_from_8)
    norms = apply_budget(mv, 4, 2)
    torch.testing.assert_close(norms.vectors[norms.mask].norm(dim=-1), torch.ones(int(norms.mask.sum()), dtype=torch.float64))
    with pytest.raises(ValueError):
        apply_budget(mv, 64, 1)


SPELLINGS = [  # text -> (layers, dim, pool, precision); None: left open (the deepest exit, the full width)
    ("L2-d32-p2", (2, 32, 2, "fp16")), ("L2-d32-p2-bin", (2, 32, 2, "bin")), ("L4-d128-p1-int8", (4, 128, 1, "int8")),
    ("d32-p2", (None, 32, 2, "fp16")), ("L3-p4", (3, None, 4, "fp16")), ("full", (None, None, 1, "fp16")),
    ("full-bin", (None, None, 1, "bin")), ("d16-p4-int8", (None, 16, 4, "int8")),
]


@pytest.mark.parametrize("text,fields", SPELLINGS, ids=[s for s, _ in SPELLINGS])
def test_one_spelling_parses_and_prints_back(text, fields):
    b = Budget.parse(text)
    assert (b.layers, b.dim, b.pool, b.precision) == fields and str(b) == text


def test_open_axes_resolve_to_the_deepest_exit_and_full_width():
    assert Budget.parse("full").resolve([1, 2, 4], 128) == Budget(4, 128, 1)
    assert Budget.parse("d32-p2-bin").resolve([1, 2, 4], 128) == Budget(4, 32, 2, "bin")
    assert Budget.parse("L1-d16-p4").resolve([1, 2, 4], 128) == Budget(1, 16, 4)  # nothing open: unchanged
    grid = budget_grid([2, 4], [64, 32], [1, 2])
    assert resolve_in(Budget.parse("full"), grid) == full_budget(grid) == Budget(4, 64, 1)


@pytest.mark.parametrize("bad", ["", "L2", "p", "p2x", "L2-d32-p2-p2", "d32-L2-p2", "2-32-2", "L2-d32-p-1", "fulls"])
def test_malformed_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="not a budget"):
        Budget.parse(bad)


def test_the_page_level_is_one_vector_per_page_the_mean_of_its_vectors():
    """Pool `page`: one table entry (a pool factor no grid reaches), so the pooling code has no special case."""
    assert POOL_NAMES[PAGE] == "page"
    b = Budget.parse("L2-d32-page-bin")
    assert (b.layers, b.dim, b.pool, b.precision) == (2, 32, PAGE, "bin") and str(b) == "L2-d32-page-bin"
    mv = pages()
    out = apply_budget(mv, 12, PAGE)
    assert out.vectors.shape[1] == 1 and out.mask.all() and out.grids.tolist() == [[1, 1]] * len(GRIDS)
    for i, (h, w) in enumerate(GRIDS):
        cells = mv.vectors[i, : h * w].tolist()
        mean = [sum(c[j] for c in cells) / len(cells) for j in range(12)]  # every real cell, padding never
        torch.testing.assert_close(out.vectors[i, 0], normalize(torch.tensor(mean, dtype=torch.float64)))
    grid = budget_grid([1, 2], [32, 16], [1, 2, PAGE])
    assert full_budget(grid) == Budget(2, 32, 1) and grid[2] == Budget(2, 32, PAGE)  # the coarsest of its row
    assert pooled_counts(torch.tensor(GRIDS), PAGE).tolist() == [1] * len(GRIDS)


def test_pools_in_the_config_take_the_level_name():
    from pipeline.config import ConfigError, load_config

    assert load_config(None, ["model.pools=[1, 2, page]"]).model.pools == [1, 2, PAGE]
    with pytest.raises(ConfigError, match="model.pools.1.: a pool is an integer >= 1 or one of 'page', got 'pag'"):
        load_config(None, ["model.pools=[1, pag]"])
    with pytest.raises(ValueError, match="must be >= 1"):
        Budget(2, 32, -1)
