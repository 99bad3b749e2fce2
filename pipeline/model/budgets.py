"""Budgets (layers, dim, pool): the grid one set of weights serves, and applying a budget to full-width vectors."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.model.pooling import normalize, pool_grid
from pipeline.model.precision import PRECISIONS
from pipeline.model.vectors import MultiVector


@dataclass(frozen=True, order=True)
class Budget:
    """One operating point: run `layers` decoder layers, keep the first `dim` coordinates, pool pages by `pool`,
    store page vectors at `precision` (fp16, int8 or bin: pipeline/model/precision.py)."""

    layers: int
    dim: int
    pool: int
    precision: str = "fp16"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")

    def __str__(self) -> str:
        suffix = "" if self.precision == "fp16" else f"-{self.precision}"
        return f"L{self.layers}-d{self.dim}-p{self.pool}{suffix}"

    @staticmethod
    def parse(text: str) -> "Budget":
        """Inverse of str(): 'L4-d128-p1' -> Budget(4, 128, 1), 'L2-d32-p2-bin' -> Budget(2, 32, 2, 'bin')."""
        parts = text.split("-")
        ok = len(parts) in (3, 4) and [x[:1] for x in parts[:3]] == ["L", "d", "p"]
        if not ok or not all(x[1:].isdigit() for x in parts[:3]):
            raise ValueError(f"not a budget: {text!r} (expected like 'L4-d128-p1' or 'L2-d32-p2-int8')")
        return Budget(int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]), *parts[3:])

    def as_dict(self) -> dict:
        return {"layers": self.layers, "dim": self.dim, "pool": self.pool, "precision": self.precision}

    @property
    def fp16(self) -> "Budget":
        """The same (layers, dim, pool) at fp16: the float vectors this budget stores at its precision."""
        return Budget(self.layers, self.dim, self.pool)


def _order(b: Budget) -> tuple:
    return -b.layers, -b.dim, b.pool, PRECISIONS.index(b.precision)


def budget_grid(exits: list[int], widths: list[int], pools: list[int],
                precisions: list[str] | tuple[str, ...] = ("fp16",)) -> list[Budget]:
    """Every (exit, width, pool, precision), the full budget (deepest, widest, finest, fp16) first, then
    descending."""
    return sorted({Budget(e, d, p, x) for e in exits for d in widths for p in pools for x in precisions}, key=_order)


def retriever_grid(retriever, widths: list[int], pools: list[int],
                   precisions: list[str] | tuple[str, ...] = ("fp16",)) -> list[Budget]:
    """The grid a retriever serves: its exits x the widths up to its head width (else its own width) x pools x
    precisions."""
    widths = [w for w in widths if w <= retriever.dim] or [retriever.dim]
    return budget_grid(retriever.exits, widths, pools, precisions)


def full_budget(budgets: list[Budget]) -> Budget:
    """The largest budget of a set: most layers, widest, finest pooling, fp16 (it need not be a member)."""
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
