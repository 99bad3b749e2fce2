"""Count axis of the budget: average neighbouring page vectors on the merged patch grid by a factor p; a budget's
width and count applied to full-width vectors."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from pipeline.model.vectors import MultiVector


@lru_cache(maxsize=None)
def max_cells(n: int, p: int) -> int:
    """The largest pooled cell count ceil(h/p)*ceil(w/p) over all grids with h*w <= n (a shape-only bound)."""
    best = 0
    for h in range(1, n + 1):
        w = n // h
        best = max(best, -(-h // p) * -(-w // p))
    return max(best, 1)


def _out_cells(grids: torch.Tensor, n: int, p: int) -> int:
    """Output length: exact when the grids live on the host (free), else a bound that needs no device sync."""
    if grids.device.type == "cpu" and len(grids):
        h, w = grids[:, 0], grids[:, 1]
        return max(int((((h + p - 1) // p) * ((w + p - 1) // p)).max()), 1)
    return max_cells(n, p)


def pool_grid(
    vectors: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor, p: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average p x p neighbourhoods of each page's grid; ragged edges (rows or cols not divisible by p) average
    only the cells that exist, and masked vectors never count.

    vectors [B, N, D] (the first h*w of page b are its grid cells, row-major), mask [B, N] bool, grids [B, 2]
    -> pooled vectors [B, M, D] (row-major over the ceil(h/p) x ceil(w/p) grid, NOT re-normalised),
       mask [B, M] bool, grids [B, 2] (the pooled grid sides).
    """
    if p == 1:
        return vectors, mask, grids
    b, n, d = vectors.shape
    m = _out_cells(grids, n, p)
    g = grids.to(vectors.device)
    h, w = g[:, :1], g[:, 1:2]  # [B, 1]
    idx = torch.arange(n, device=vectors.device).unsqueeze(0)  # [1, N]
    row, col = idx // w.clamp(min=1), idx % w.clamp(min=1)
    cell = (row // p) * ((w + p - 1) // p) + col // p  # [B, N]
    valid = mask.to(vectors.device) & (idx < h * w)
    cell = torch.where(valid, cell, torch.full_like(cell, m))  # padding goes to a dump bin at index m
    weights = valid.to(vectors.dtype).unsqueeze(-1)
    sums = vectors.new_zeros(b, m + 1, d).scatter_add(1, cell.unsqueeze(-1).expand(b, n, d), vectors * weights)
    counts = vectors.new_zeros(b, m + 1).scatter_add(1, cell, valid.to(vectors.dtype))
    pooled = sums[:, :m] / counts[:, :m].clamp(min=1).unsqueeze(-1)
    new_grids = torch.stack([(g[:, 0] + p - 1) // p, (g[:, 1] + p - 1) // p], dim=1).to(grids.device)
    return pooled, counts[:, :m] > 0, new_grids


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis; zero vectors stay zero. [..., D] -> [..., D]."""
    return F.normalize(vectors, dim=-1, eps=1e-12)


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
