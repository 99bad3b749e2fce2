"""Budgets (layers, dim, pool): the grid one set of weights serves, and applying a budget to full-width vectors."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.model.pooling import normalize, pool_grid
from pipeline.model.vectors import MultiVector


@dataclass(frozen=True, order=True)
class Budget:
    """One operating point: run `layers` decoder layers, keep the first `dim` coordinates, pool pages by `pool`."""

    layers: int
    dim: int
    pool: int

    def __str__(self) -> str:
        return f"L{self.layers}-d{self.dim}-p{self.pool}"

    @staticmethod
    def parse(text: str) -> "Budget":
        """Inverse of str(): 'L4-d128-p1' -> Budget(4, 128, 1)."""
        parts = text.split("-")
        if len(parts) != 3 or [x[0] for x in parts] != ["L", "d", "p"]:
            raise ValueError(f"not a budget: {text!r} (expected like 'L4-d128-p1')")
        return Budget(int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]))

    def as_dict(self) -> dict[str, int]:
        return {"layers": self.layers, "dim": self.dim, "pool": self.pool}


def budget_grid(exits: list[int], widths: list[int], pools: list[int]) -> list[Budget]:
    """Every (exit, width, pool), the full budget (deepest, widest, finest) first, then descending."""
    grid = {Budget(e, d, p) for e in exits for d in widths for p in pools}
    return sorted(grid, key=lambda b: (-b.layers, -b.dim, b.pool))


def retriever_grid(retriever, widths: list[int], pools: list[int]) -> list[Budget]:
    """The grid a retriever serves: its exits x the widths up to its head width (else its own width) x pools."""
    return budget_grid(retriever.exits, [w for w in widths if w <= retriever.dim] or [retriever.dim], pools)


def full_budget(budgets: list[Budget]) -> Budget:
    """The largest budget of a set: most layers, widest, finest pooling (it need not be a member)."""
    return Budget(max(b.layers for b in budgets), max(b.dim for b in budgets), min(b.pool for b in budgets))


def apply_budget(mv: MultiVector, dim: int, pool: int) -> MultiVector:
    """Width then count: the first `dim` coordinates re-normalised, then (pages only) p x p grid means
    re-normalised. Queries (grids None) are never pooled.

    mv.vectors [B, N, D] -> [B, M, dim] with M = N for pool 1 or queries, else the pooled cell count.
    """
    if dim > mv.dim:
        raise ValueError(f"budget width {dim} exceeds the vectors' width {mv.dim}")
    vectors = mv.vectors if dim == mv.dim else normalize(mv.vectors[..., :dim])
    if pool == 1 or mv.grids is None:
        return MultiVector(vectors, mv.mask, mv.grids)
    pooled, mask, grids = pool_grid(vectors, mv.mask, mv.grids, pool)
    return MultiVector(normalize(pooled), mask, grids)
