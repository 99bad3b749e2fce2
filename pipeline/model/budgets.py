"""Budgets (layers, dim, pool, precision): their one spelling ("L2-d32-p2-bin", "d32-p2", "full"), parsed once when
the config loads, and the grid one set of weights serves. Torch-free: config loading imports it."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Iterable, Literal

Precision = Literal["fp16", "int8", "bin"]  # how page vectors are stored: pipeline/model/precision.py
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

# The coarsest level of the count axis: one vector per page, the mean of all its vectors. A pool factor at least the
# grid's side averages the whole grid in one cell, so the pooling code needs no special case for it.
PAGE = 1 << 16
# Pool levels spelt by a name instead of p<factor> (pool value -> token); a new level of the count axis is one entry.
POOL_NAMES: dict[int, str] = {PAGE: "page"}


def pool_of(value: int | str) -> int:
    """A pool factor from the config: an integer >= 1, or a level's name ("page")."""
    pool = next((p for p, name in POOL_NAMES.items() if name == value), None) if isinstance(value, str) else value
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"a pool is an integer >= 1 or one of {', '.join(map(repr, POOL_NAMES.values()))}, "
                         f"got {value!r}")
    return pool


def pool_token(pool: int) -> int | str:
    """How a pool factor is written in a config: its level's name, else the integer."""
    return POOL_NAMES.get(pool, pool)

_EXAMPLES = "like 'L4-d128-p1', 'L2-d32-p2-bin', 'd32-p2' (the deepest exit) or 'full'"


def _pool_of(token: str) -> int | None:
    named = [pool for pool, name in POOL_NAMES.items() if name == token]
    if named:
        return named[0]
    return int(token[1:]) if token[:1] == "p" and token[1:].isdigit() else None


@dataclass(frozen=True, order=True)
class Budget:
    """One operating point: run `layers` decoder layers, keep the first `dim` coordinates, pool pages by `pool`,
    store page vectors at `precision` (fp16, int8 or bin: pipeline/model/precision.py). A budget from the config
    may leave `layers` (the deepest exit) and `dim` (the full width) open: `resolve` fills them for a model."""

    layers: int | None
    dim: int | None
    pool: int
    precision: str = "fp16"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        small = any(x is not None and x < 1 for x in (self.layers, self.dim))
        if small or (self.pool < 1 and self.pool not in POOL_NAMES):
            raise ValueError(f"layers, dim and pool must be >= 1, got {(self.layers, self.dim, self.pool)}")

    def __str__(self) -> str:
        if (self.layers, self.dim, self.pool) == (None, None, 1):
            tokens = ["full"]
        else:
            tokens = [f"{p}{x}" for p, x in (("L", self.layers), ("d", self.dim)) if x is not None]
            tokens.append(POOL_NAMES.get(self.pool, f"p{self.pool}"))
        return "-".join(tokens + ([] if self.precision == "fp16" else [self.precision]))

    @staticmethod
    def parse(text: str) -> Budget:
        """Inverse of str(): 'L4-d128-p1' -> Budget(4, 128, 1), 'L2-d32-p2-bin' -> Budget(2, 32, 2, 'bin'),
        'd32-p2' -> Budget(None, 32, 2), 'full' -> Budget(None, None, 1)."""
        tokens = str(text).split("-")
        precision = tokens.pop() if len(tokens) > 1 and _pool_of(tokens[-1]) is None else "fp16"
        if tokens == ["full"]:
            return Budget(None, None, 1, precision)
        sizes = []
        for prefix in ("L", "d"):
            take = bool(tokens) and tokens[0][:1] == prefix and tokens[0][1:].isdigit()
            sizes.append(int(tokens.pop(0)[1:]) if take else None)
        pool = _pool_of(tokens[0]) if len(tokens) == 1 else None
        if pool is None:
            raise ValueError(f"not a budget: {text!r} (expected {_EXAMPLES})")
        return Budget(*sizes, pool, precision)

    def resolve(self, exits: Iterable[int], dim: int) -> Budget:
        """This budget on a model with `exits` and full width `dim`: the deepest exit and the full width fill what
        it leaves open."""
        return Budget(max(exits) if self.layers is None else self.layers, dim if self.dim is None else self.dim,
                      self.pool, self.precision)

    def as_dict(self) -> dict:
        return {"layers": self.layers, "dim": self.dim, "pool": self.pool, "precision": self.precision}

    @property
    def fp16(self) -> Budget:
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


def resolve_in(budget: Budget, grid: list[Budget]) -> Budget:
    """`budget` resolved against `grid` (its deepest exit and widest width fill what it leaves open)."""
    full = full_budget(grid)
    return budget.resolve([full.layers], full.dim)
