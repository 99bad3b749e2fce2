"""Independent plain-Python references (loops over items, cells and vectors) for MaxSim, pooling and budgets."""

import math

import torch


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v] if n > 0 else list(v)


def ref_maxsim(qs: list[list[list[float]]], ps: list[list[list[float]]]) -> list[list[float]]:
    """qs[i] = real vectors of query i, ps[j] = real vectors of page j -> scores[i][j]."""
    out = []
    for qv in qs:
        row = []
        for pv in ps:
            total = 0.0
            for a in qv:
                best = max((sum(x * y for x, y in zip(a, b)) for b in pv), default=0.0)
                total += best
            row.append(total)
        out.append(row)
    return out


def ref_pool(cells: list[list[float]], h: int, w: int, p: int) -> list[list[float]]:
    """Row-major h x w grid of vectors -> row-major ceil(h/p) x ceil(w/p) grid of means (not normalised)."""
    out = []
    for r0 in range(0, h, p):
        for c0 in range(0, w, p):
            members = [cells[r * w + c] for r in range(r0, min(r0 + p, h)) for c in range(c0, min(c0 + p, w))]
            out.append([sum(col) / len(members) for col in zip(*members)])
    return out


def ref_page(cells: list[list[float]], h: int, w: int, dim: int, pool: int) -> list[list[float]]:
    """A page's vectors at (dim, pool): slice, re-normalise, pool, re-normalise."""
    sliced = [unit(v[:dim]) for v in cells]
    return [unit(v) for v in ref_pool(sliced, h, w, pool)]


def real_rows(vectors: torch.Tensor, mask: torch.Tensor) -> list[list[list[float]]]:
    """[B, N, D] + [B, N] -> per item the real vectors as nested lists (float64)."""
    return [[vectors[b, n].double().tolist() for n in range(vectors.shape[1]) if mask[b, n]] for b in range(len(vectors))]
