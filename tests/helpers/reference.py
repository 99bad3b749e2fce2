"""Independent plain-Python references (loops over items, cells and vectors) for MaxSim, pooling, budgets, page-vector
precision and IR metrics."""

import math
import struct

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


def pooled_counts(grids: torch.Tensor, pool: int) -> torch.Tensor:
    """Vectors per page after pooling by `pool`: grids [P, 2] (rows, cols) -> [P], ceil(h/p) * ceil(w/p)."""
    g = grids.long()
    return ((g[:, 0] + pool - 1) // pool) * ((g[:, 1] + pool - 1) // pool)


def ref_page(cells: list[list[float]], h: int, w: int, dim: int, pool: int) -> list[list[float]]:
    """A page's vectors at (dim, pool): slice, re-normalise, pool, re-normalise."""
    sliced = [unit(v[:dim]) for v in cells]
    return [unit(v) for v in ref_pool(sliced, h, w, pool)]


def real_rows(vectors: torch.Tensor, mask: torch.Tensor) -> list[list[list[float]]]:
    """[B, N, D] + [B, N] -> per item the real vectors as nested lists (float64)."""
    return [[vectors[b, n].double().tolist() for n in range(vectors.shape[1]) if mask[b, n]] for b in range(len(vectors))]


def half(x: float) -> float:
    """x rounded to IEEE float16 (struct's 'e' format: independent of torch)."""
    return struct.unpack("e", struct.pack("e", x))[0]


def hand_int8(v: list[float]) -> list[float]:
    scale = half(max(abs(x) for x in v) / 127)
    return [max(-127, min(127, round(x / scale))) * scale if scale else 0.0 for x in v]


def hand_bin(v: list[float]) -> list[float]:
    return [(1.0 if x >= 0 else -1.0) / math.sqrt(len(v)) for x in v]


def hand_pack(v: list[float]) -> list[int]:
    """Sign bits, coordinate 0 in the high bit of byte 0, the last byte zero-padded."""
    bits = [1 if x >= 0 else 0 for x in v] + [0] * ((-len(v)) % 8)
    return [sum(b << (7 - i) for i, b in enumerate(bits[k:k + 8])) for k in range(0, len(bits), 8)]


def hand_metrics(order: list[str], rels: dict[str, int]) -> dict[str, float]:
    """Textbook definitions on a ranked list: gain = grade, discount log2(rank + 1), ideal from sorted grades."""

    def ndcg(k):
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(order[:k]))
        ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
        return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))

    relevant = {d for d, g in rels.items() if g > 0}
    first = next((i + 1 for i, d in enumerate(order[:10]) if d in relevant), None)
    out = {"ndcg_at_5": ndcg(5), "ndcg_at_10": ndcg(10), "mrr_at_10": 1.0 / first if first else 0.0}
    for k in (1, 5, 10):
        out[f"recall_at_{k}"] = len(relevant & set(order[:k])) / len(relevant)
    return out
