"""The width x depth x count Matryoshka objective: weighted per-budget MaxSim cross-entropy (+ optional KL).

The KL term self-distils each smaller budget's score distribution towards the full budget's (teacher detached).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from pipeline.config import LossConfig
from pipeline.model.budgets import Budget, apply_budget, full_budget
from pipeline.model.maxsim import maxsim
from pipeline.model.vectors import MultiVector


def select_budgets(grid: list[Budget], cfg: LossConfig, step: int) -> list[Budget]:
    """The budgets trained at `step`: a pure function of its arguments, so every rank picks the same.

    cfg.budgets: "grid" (all), "2d" (finest pool only: width x depth), "full" (the full budget only).
    cfg.sample_k > 0: the full budget plus k others drawn without replacement, seeded by (sample_seed, step).
    Returns the full budget first, then the rest in grid order.
    """
    full = full_budget(grid)
    if cfg.budgets == "grid":
        pool = list(grid)
    elif cfg.budgets == "2d":
        pool = [b for b in grid if b.pool == full.pool]
    elif cfg.budgets == "full":
        pool = [full]
    else:
        raise ValueError(f"loss.budgets must be grid, 2d or full, got {cfg.budgets!r}")
    rest = [b for b in pool if b != full]
    if 0 < cfg.sample_k < len(rest):
        rng = random.Random(f"{cfg.sample_seed}:{step}")
        chosen = set(rng.sample(range(len(rest)), cfg.sample_k))
        rest = [b for i, b in enumerate(rest) if i in chosen]
    return [full] + rest


def budget_scores(q: dict[int, MultiVector], p: dict[int, MultiVector], budget: Budget,
                  cache: dict | None = None) -> torch.Tensor:
    """MaxSim scores at one budget from full-width vectors of its exit: [Bq, Bp]. `cache` (a dict shared over one
    loss call) reuses the width-sliced vectors of an (exit, dim) across pool factors."""
    cache = {} if cache is None else cache
    key = (budget.layers, budget.dim)
    if key not in cache:
        cache[key] = (apply_budget(q[budget.layers], budget.dim, 1), apply_budget(p[budget.layers], budget.dim, 1))
    qb, pb = cache[key]
    return maxsim(qb, apply_budget(pb, budget.dim, budget.pool))


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
) -> tuple[torch.Tensor, dict[Budget, torch.Tensor]]:
    """Weighted contrastive loss over `budgets`.

    q: {exit: MultiVector [Bq, Nq, D]} queries, p: {exit: MultiVector [Bp, Np, D]} pages (Bp >= Bq: in-batch and
    hard negatives, possibly gathered from every rank), full width D; budgets are applied here.
    labels [Bq] long: the positive page of each query (default arange(Bq)).
    For budget b: logits = maxsim / temperature, ce_b = cross-entropy(logits, labels) (mean over queries).
    total = sum_b w_b ce_b + distill_weight * sum_{b != full} w_b KL_b, divided by sum_b w_b when cfg.normalize;
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
    if cfg.distill_weight > 0 and full in logits:
        teacher = logits[full]
        for b in budgets:
            if b != full:
                total = total + cfg.distill_weight * weights[b] * _kl(logits[b], teacher, cfg.distill_temperature)
    if cfg.normalize:
        total = total / sum(weights.values())
    return total, per_budget
