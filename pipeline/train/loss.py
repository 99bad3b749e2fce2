"""The width x depth x count Matryoshka objective: weighted per-budget MaxSim cross-entropy (+ optional KL).

The KL term self-distils each smaller budget's score distribution towards the full budget's (teacher detached).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from pipeline.train.config import LossConfig
from pipeline.model.budgets import PAGE, Budget, full_budget, resolve_in
from pipeline.model.pooling import apply_budget
from pipeline.model.maxsim import maxsim
from pipeline.model.precision import fake_quantize
from pipeline.model.vectors import MultiVector


def diagonal(grid: list[Budget]) -> list[Budget]:
    """The fixed diagonal of a grid, full budget first: the i-th deepest exit with the i-th widest width and a pool
    stepping from finest to coarsest (indices spread evenly when the axes differ in length). For exits 1-4, widths
    128/64/32/16, pools 1/2/4: L4-d128-p1, L3-d64-p2, L2-d32-p2, L1-d16-p4. The page level (one vector per page)
    is not a step of it: train it with loss.always."""
    exits = sorted({b.layers for b in grid}, reverse=True)
    widths = sorted({b.dim for b in grid}, reverse=True)
    pools = sorted({b.pool for b in grid if b.pool < PAGE}) or [PAGE]
    n = len(exits)

    def pick(axis: list[int], i: int) -> int:
        return axis[round(i * (len(axis) - 1) / (n - 1))] if n > 1 else axis[0]

    return [Budget(e, pick(widths, i), pick(pools, i)) for i, e in enumerate(exits)]


def select_budgets(grid: list[Budget], cfg: LossConfig, step: int) -> list[Budget]:
    """The budgets trained at `step`: a pure function of its arguments, so every rank picks the same.

    cfg.budgets picks the fixed budgets (trained every step) and the candidates: grid and 2d fix the full budget
    (candidates: the rest of the grid, or of its finest pool); full fixes only it; diagonal fixes diagonal(grid)
    (candidates: the rest of the grid, none unless sample_k > 0); only fixes cfg.only (and nothing else). cfg.always
    adds fixed budgets to any but only. Every candidate is trained
    when sample_k is 0 (grid, 2d), else k of them drawn without replacement, seeded by (sample_seed, step).
    With cfg.qat, each of them but the full budget follows again at that precision (its page vectors quantised
    in the forward pass). Returns the fixed budgets first, then the drawn ones in grid order, then the quantised.
    """
    full = full_budget(grid)
    if cfg.budgets == "only":
        only = resolve_in(cfg.only, grid)
        if only not in grid:
            raise ValueError(f"loss.only {only} is not in the budget grid (exits "
                             f"{sorted({b.layers for b in grid})}, model.widths, model.pools)")
        return _with_qat([only], full, cfg)
    fixed = diagonal(grid) if cfg.budgets == "diagonal" else [full]
    always = [resolve_in(b, grid) for b in cfg.always]
    missing = [str(b) for b in always if b not in grid]
    if missing:
        raise ValueError(f"loss.always {missing} are not in the budget grid (exits {sorted({b.layers for b in grid})}, "
                         "model.widths, model.pools)")
    fixed += [b for b in always if b not in fixed]
    if cfg.budgets == "full":
        rest = []
    elif cfg.budgets == "2d":
        rest = [b for b in grid if b.pool == full.pool and b not in fixed]
    else:
        rest = [b for b in grid if b not in fixed]
    if cfg.budgets == "diagonal" and cfg.sample_k == 0:
        rest = []
    if 0 < cfg.sample_k < len(rest):
        rng = random.Random(f"{cfg.sample_seed}:{step}")
        chosen = set(rng.sample(range(len(rest)), cfg.sample_k))
        rest = [b for i, b in enumerate(rest) if i in chosen]
    return _with_qat(fixed + rest, full, cfg)


def _with_qat(budgets: list[Budget], full: Budget, cfg: LossConfig) -> list[Budget]:
    if cfg.qat == "none":
        return budgets
    return budgets + [Budget(b.layers, b.dim, b.pool, cfg.qat) for b in budgets if b != full]


def distill_weight(cfg: LossConfig, step: int) -> float:
    """The self-distillation weight at `step`: cfg.distill_weight, ramped linearly over cfg.distill_ramp_steps."""
    if cfg.distill_ramp_steps == 0:
        return cfg.distill_weight
    return cfg.distill_weight * min(1.0, step / cfg.distill_ramp_steps)


def budget_scores(q: dict[int, MultiVector], p: dict[int, MultiVector], budget: Budget,
                  cache: dict | None = None) -> torch.Tensor:
    """MaxSim scores at one budget from full-width vectors of its exit: [Bq, Bp]; page vectors at a precision below
    fp16 are quantised straight-through. `cache` (a dict shared over one loss call) reuses the width-sliced
    vectors of an (exit, dim) across pool factors."""
    cache = {} if cache is None else cache
    key = (budget.layers, budget.dim)
    if key not in cache:
        cache[key] = (apply_budget(q[budget.layers], budget.dim, 1), apply_budget(p[budget.layers], budget.dim, 1))
    qb, pb = cache[key]
    pages = apply_budget(pb, budget.dim, budget.pool)
    if budget.precision != "fp16":
        pages = MultiVector(fake_quantize(pages.vectors, budget.precision), pages.mask, pages.grids)
    return maxsim(qb, pages)


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of softened distributions over pages, mean over queries, scaled by t^2."""
    log_s = F.log_softmax(student_logits / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean() * (t * t)


def matryoshka_loss(
    q: dict[int, MultiVector],
    p: dict[int, MultiVector],
    budgets: list[Budget],
    cfg: LossConfig,
    labels: torch.Tensor | None = None,
    step: int = 0,
) -> tuple[torch.Tensor, dict[Budget, torch.Tensor]]:
    """Weighted contrastive loss over `budgets`.

    q: {exit: MultiVector [Bq, Nq, D]} queries, p: {exit: MultiVector [Bp, Np, D]} pages (Bp >= Bq: in-batch and
    hard negatives, possibly gathered from every rank), full width D; budgets are applied here.
    labels [Bq] long: the positive page of each query (default arange(Bq)).
    For budget b: logits = maxsim / temperature, ce_b = cross-entropy(logits, labels) (mean over queries).
    total = sum_b w_b ce_b + distill_weight(step) * sum_{b != full} w_b KL_b, divided by sum_b w_b when cfg.normalize;
    w = full_weight for the full budget, small_weight otherwise; KL_b = KL(softmax(full/t) || softmax(b/t)) * t^2
    over logits, t = distill_temperature, teacher detached. No host syncs.
    Returns (total [], {budget: ce_b []}).
    """
    full = full_budget(budgets)
    if labels is None:
        labels = torch.arange(len(next(iter(q.values()))), device=next(iter(q.values())).vectors.device)
    cache: dict = {}
    logits = {b: budget_scores(q, p, b, cache) / cfg.temperature for b in budgets}
    per_budget = {b: F.cross_entropy(logits[b], labels) for b in budgets}
    weights = {b: cfg.full_weight if b == full else cfg.small_weight for b in budgets}
    total = sum(weights[b] * per_budget[b] for b in budgets)
    kl_weight = distill_weight(cfg, step)
    if kl_weight > 0 and full in logits:
        teacher = logits[full]
        for b in budgets:
            if b != full:
                total = total + kl_weight * weights[b] * _kl(logits[b], teacher, cfg.distill_temperature)
    if cfg.normalize:
        total = total / sum(weights.values())
    return total, per_budget
