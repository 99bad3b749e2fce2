"""The Matryoshka objective against a hand-written reference (loops, math.exp) for every budget and the KL term."""

import math

import pytest
import torch

from pipeline.config import LossConfig
from pipeline.model.budgets import Budget, budget_grid, full_budget
from pipeline.model.pooling import normalize
from pipeline.model.vectors import MultiVector
from pipeline.train.loss import matryoshka_loss, select_budgets
from tests.helpers.reference import ref_maxsim, ref_page, unit

EXITS, WIDTHS, POOLS = [1, 2], [8, 4], [1, 2]
PAGE_GRIDS = [(2, 3), (3, 3), (2, 2), (1, 4), (3, 2)]  # 5 pages: 3 queries' positives + 2 hard negatives


def make_inputs(seed=0, d=8):
    g = torch.Generator().manual_seed(seed)
    n_pages = max(h * w for h, w in PAGE_GRIDS)
    lengths = [3, 2, 4]
    q, p = {}, {}
    pmask = torch.tensor([[i < h * w for i in range(n_pages)] for h, w in PAGE_GRIDS])
    qmask = torch.tensor([[i < n for i in range(max(lengths))] for n in lengths])
    for e in EXITS:
        qv = normalize(torch.randn(len(lengths), max(lengths), d, generator=g, dtype=torch.float64))
        pv = normalize(torch.randn(len(PAGE_GRIDS), n_pages, d, generator=g, dtype=torch.float64))
        q[e] = MultiVector(qv.requires_grad_(), qmask)
        p[e] = MultiVector(pv.requires_grad_(), pmask, torch.tensor(PAGE_GRIDS))
    return q, p


def ref_logits(q, p, b, temperature):
    qs = [[unit(v[: b.dim]) for v in q[b.layers].vectors[i][q[b.layers].mask[i]].tolist()] for i in range(len(q[b.layers]))]
    ps = [
        ref_page(p[b.layers].vectors[j, : h * w].tolist(), h, w, b.dim, b.pool) for j, (h, w) in enumerate(PAGE_GRIDS)
    ]
    return [[s / temperature for s in row] for row in ref_maxsim(qs, ps)]


def ref_softmax(row, t=1.0):
    m = max(x / t for x in row)
    e = [math.exp(x / t - m) for x in row]
    return [x / sum(e) for x in e]


def ref_ce(logits, labels):
    return sum(-math.log(ref_softmax(row)[y]) for row, y in zip(logits, labels)) / len(labels)


def ref_kl(student, teacher, t):
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        ps, pt = ref_softmax(s_row, t), ref_softmax(t_row, t)
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    return total / len(student) * t * t


@pytest.mark.parametrize("distill,normalize_", [(0.0, True), (0.5, True), (0.7, False)])
def test_loss_matches_reference(distill, normalize_):
    cfg = LossConfig(temperature=0.1, full_weight=1.0, small_weight=0.3, distill_weight=distill,
                     distill_temperature=2.0, normalize=normalize_)
    q, p = make_inputs()
    grid = budget_grid(EXITS, WIDTHS, POOLS)
    labels = torch.tensor([2, 0, 1])
    total, per_budget = matryoshka_loss(q, p, grid, cfg, labels)
    full = full_budget(grid)
    logits = {b: ref_logits(q, p, b, cfg.temperature) for b in grid}
    want_total, weight_sum = 0.0, 0.0
    for b in grid:
        w = cfg.full_weight if b == full else cfg.small_weight
        ce = ref_ce(logits[b], labels.tolist())
        assert per_budget[b].item() == pytest.approx(ce, rel=1e-9), b
        want_total += w * ce
        weight_sum += w
        if b != full:
            want_total += distill * w * ref_kl(logits[b], logits[full], cfg.distill_temperature)
    if normalize_:
        want_total /= weight_sum
    assert total.item() == pytest.approx(want_total, rel=1e-9)
    total.backward()
    for e in EXITS:
        assert torch.isfinite(q[e].vectors.grad).all() and torch.isfinite(p[e].vectors.grad).all()
        assert q[e].vectors.grad.abs().sum() > 0 and p[e].vectors.grad.abs().sum() > 0


def test_teacher_is_detached():
    """With the full budget weighted 0, no gradient reaches its vectors (exit 2 serves only the detached teacher)."""
    q, p = make_inputs(1)
    cfg = LossConfig(temperature=0.1, full_weight=0.0, small_weight=1.0, distill_weight=1.0)
    budgets = [Budget(2, 8, 1), Budget(1, 4, 2)]
    total, _ = matryoshka_loss(q, p, budgets, cfg.model_copy(update=dict(normalize=False)))
    total.backward()
    assert q[2].vectors.grad is None or torch.all(q[2].vectors.grad == 0)
    assert q[1].vectors.grad.abs().sum() > 0


def test_default_labels_are_diagonal():
    q, p = make_inputs(2)
    cfg = LossConfig()
    a, _ = matryoshka_loss(q, p, [Budget(2, 8, 1)], cfg)
    b, _ = matryoshka_loss(q, p, [Budget(2, 8, 1)], cfg, torch.arange(3))
    assert torch.equal(a, b)


def test_select_budgets():
    grid = budget_grid([1, 2, 3, 4], [128, 64, 32, 16], [1, 2, 4])
    full = Budget(4, 128, 1)
    assert select_budgets(grid, LossConfig(budgets="grid"), 0) == grid
    two_d = select_budgets(grid, LossConfig(budgets="2d"), 0)
    assert len(two_d) == 16 and all(b.pool == 1 for b in two_d)
    assert select_budgets(grid, LossConfig(budgets="full"), 0) == [full]
    cfg = LossConfig(sample_k=5)
    draws = [select_budgets(grid, cfg, s) for s in range(20)]
    assert all(d[0] == full and len(set(d)) == 6 and set(d) <= set(grid) for d in draws)
    assert draws == [select_budgets(grid, cfg, s) for s in range(20)]  # pure function of (grid, cfg, step)
    assert len({tuple(d) for d in draws}) > 10  # and it varies with the step
    assert select_budgets(grid, LossConfig(sample_k=100), 3) == grid
    with pytest.raises(ValueError):
        select_budgets(grid, LossConfig(budgets="3d"), 0)


def test_diagonal_and_only_budgets():
    grid = budget_grid([1, 2, 3, 4], [128, 64, 32, 16], [1, 2, 4])
    diag = [Budget(4, 128, 1), Budget(3, 64, 2), Budget(2, 32, 2), Budget(1, 16, 4)]
    assert select_budgets(grid, LossConfig(budgets="diagonal"), 7) == diag  # fixed: the same at every step
    draws = [select_budgets(grid, LossConfig(budgets="diagonal", sample_k=3), s) for s in range(10)]
    assert all(d[:4] == diag and len(set(d[4:]) - set(diag)) == 3 for d in draws)
    assert len({tuple(d) for d in draws}) > 5
    # Axes of unequal length: 2 exits -> the full budget and the smallest of every axis.
    assert select_budgets(budget_grid([2, 4], [64, 32, 16], [1, 2, 4]), LossConfig(budgets="diagonal"), 0) == [
        Budget(4, 64, 1), Budget(2, 16, 4)]
    only = LossConfig(budgets="only", only="L2-d32-p2")
    assert select_budgets(grid, only, 0) == [Budget(2, 32, 2)]
    assert select_budgets(grid, LossConfig(budgets="only", only="d32-p2"), 0) == [Budget(4, 32, 2)]  # the last exit
    with pytest.raises(ValueError, match=r"loss.only L5-d32-p2 is not in the budget grid"):
        select_budgets(grid, LossConfig(budgets="only", only="L5-d32-p2"), 0)
    with pytest.raises(ValueError, match="only"):
        LossConfig(budgets="only")
    with pytest.raises(ValueError, match="only"):
        LossConfig(budgets="grid", only="L2-d32-p2")
    with pytest.raises(ValueError, match="only: L2-d32-p2-bin is stored at bin"):
        LossConfig(budgets="only", only="L2-d32-p2-bin")


def test_distillation_ramps_linearly():
    """At step s the KL term weighs distill_weight * min(1, s / ramp): the loss at s is the no-KL loss plus that
    fraction of the full-weight KL part (both computed independently)."""
    q, p = make_inputs(3)
    grid = budget_grid(EXITS, WIDTHS, POOLS)
    base = LossConfig(temperature=0.1, small_weight=0.5, normalize=False)
    plain = matryoshka_loss(q, p, grid, base)[0].item()
    kl_part = matryoshka_loss(q, p, grid, base.model_copy(update=dict(distill_weight=0.8)))[0].item() - plain
    assert kl_part > 0
    ramped = base.model_copy(update=dict(distill_weight=0.8, distill_ramp_steps=10))
    for step, frac in [(0, 0.0), (4, 0.4), (10, 1.0), (25, 1.0)]:
        got = matryoshka_loss(q, p, grid, ramped, step=step)[0].item()
        assert got == pytest.approx(plain + frac * kl_part, rel=1e-9), step


def test_qat_budgets_follow_the_selection():
    grid = budget_grid([1, 2, 3, 4], [128, 64, 32, 16], [1, 2, 4])
    cfg = LossConfig(budgets="diagonal", sample_k=2, qat="bin")
    for step in range(5):
        chosen = select_budgets(grid, cfg, step)
        plain = select_budgets(grid, cfg.model_copy(update=dict(qat="none")), step)
        assert chosen == plain + [Budget(b.layers, b.dim, b.pool, "bin") for b in plain[1:]]  # all but the full one
    assert select_budgets(grid, LossConfig(budgets="only", only="L2-d32-p2", qat="int8"), 0) == [
        Budget(2, 32, 2), Budget(2, 32, 2, "int8")]


@pytest.mark.parametrize("precision", ["bin", "int8"])
def test_qat_is_straight_through(precision):
    """At a quantised budget the loss is the loss over hand-quantised pages (plain-Python reference), and the
    gradient reaching the float page vectors is the gradient the quantised values would get (identity STE)."""
    from tests.helpers.reference import hand_bin, hand_int8

    hand = {"bin": hand_bin, "int8": hand_int8}[precision]
    q, p = make_inputs(4)
    cfg = LossConfig(temperature=0.1)
    labels = torch.tensor([2, 0, 1])
    budget = Budget(2, 8, 1, precision)  # full width, no pooling: the budget leaves the vectors as they are
    total, _ = matryoshka_loss(q, p, [budget], cfg, labels)
    pages = [[hand(v) for v in p[2].vectors[j, : h * w].tolist()] for j, (h, w) in enumerate(PAGE_GRIDS)]
    qs = [q[2].vectors[i][q[2].mask[i]].tolist() for i in range(3)]
    want = ref_ce([[s / cfg.temperature for s in row] for row in ref_maxsim(qs, pages)], labels.tolist())
    assert total.item() == pytest.approx(want, rel=1e-6)
    total.backward()
    quantised = torch.zeros_like(p[2].vectors)
    for j, (h, w) in enumerate(PAGE_GRIDS):
        quantised[j, : h * w] = torch.tensor(pages[j], dtype=quantised.dtype)
    leaf = quantised.clone().requires_grad_()
    q2 = {2: MultiVector(q[2].vectors.detach(), q[2].mask)}
    ref_total, _ = matryoshka_loss(q2, {2: MultiVector(leaf, p[2].mask, p[2].grids)}, [Budget(2, 8, 1)], cfg, labels)
    ref_total.backward()
    assert ref_total.item() == pytest.approx(total.item(), rel=1e-6)
    torch.testing.assert_close(p[2].vectors.grad, leaf.grad)
    # Negative control: the float pages give another gradient (the forward really was quantised).
    q3 = {2: MultiVector(q[2].vectors.detach(), q[2].mask)}
    fleaf = p[2].vectors.detach().clone().requires_grad_()
    matryoshka_loss(q3, {2: MultiVector(fleaf, p[2].mask, p[2].grids)}, [Budget(2, 8, 1)], cfg, labels)[0].backward()
    assert not torch.allclose(fleaf.grad, leaf.grad)


def test_always_adds_fixed_budgets_and_the_page_level_stays_off_the_diagonal():
    from pipeline.model.budgets import PAGE

    grid = budget_grid([1, 2, 3, 4], [128, 64, 32, 16], [1, 2, 4, PAGE])
    diag = [Budget(4, 128, 1), Budget(3, 64, 2), Budget(2, 32, 2), Budget(1, 16, 4)]  # as without the page level
    assert select_budgets(grid, LossConfig(budgets="diagonal"), 0) == diag
    cfg = LossConfig(budgets="diagonal", sample_k=2, always=["L4-d128-page"])
    for step in range(5):
        chosen = select_budgets(grid, cfg, step)
        assert chosen[:5] == [*diag, Budget(4, 128, PAGE)] and len(chosen) == 7 and len(set(chosen)) == 7
    assert select_budgets(grid, LossConfig(budgets="full", always=["d32-page"]), 0) == [Budget(4, 128, 1),
                                                                                     Budget(4, 32, PAGE)]
    with pytest.raises(ValueError, match="not in the budget grid"):
        select_budgets(budget_grid([2, 4], [64], [1, 2]), LossConfig(always=["L4-d64-page"]), 0)
