"""What a budget costs: exact index bytes per page (stored vectors x dim x bytes per value) and encode time.

Index vectors are stored at `STORAGE_DTYPE` (float16, 2 bytes per value) unless stated otherwise. The vector
count of a page at pool p is the number of non-empty p x p cells of its merged patch grid, ceil(h/p)*ceil(w/p)
for a page whose h*w grid cells are all real.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from pipeline.evaluate.quantize import SCALE_BYTES

STORAGE_DTYPE = "float16"
BYTES_PER_VALUE = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


def bytes_per_value(dtype: str = STORAGE_DTYPE) -> int:
    """Bytes of one stored coordinate for an index dtype name ('float16' -> 2)."""
    if dtype not in BYTES_PER_VALUE:
        raise ValueError(f"unknown index dtype {dtype!r} (known: {', '.join(BYTES_PER_VALUE)})")
    return BYTES_PER_VALUE[dtype]


def pooled_counts(grids: torch.Tensor, pool: int) -> torch.Tensor:
    """Vectors per page after pooling by `pool`: grids [P, 2] (rows, cols) -> [P] long, ceil(h/p) * ceil(w/p)."""
    g = grids.long()
    return ((g[:, 0] + pool - 1) // pool) * ((g[:, 1] + pool - 1) // pool)


def bytes_per_page_from_grids(grids: torch.Tensor, dim: int, pool: int, dtype: str = STORAGE_DTYPE) -> float:
    """Mean index bytes per page predicted from the patch grids alone: grids [P, 2] -> float."""
    return bytes_per_page(pooled_counts(grids, pool), dim, dtype)


def bytes_per_page(vector_counts: list[int] | torch.Tensor, dim: int, dtype: str = STORAGE_DTYPE) -> float:
    """Mean index bytes per page from the vectors actually stored: counts [P] -> float (exact, no estimate;
    int8 vectors carry their float16 scale)."""
    counts = torch.as_tensor(vector_counts, dtype=torch.long)
    per_vector = dim * bytes_per_value(dtype) + SCALE_BYTES.get(dtype, 0)
    return float(counts.sum().item() * per_vector) / max(len(counts), 1)


def time_per_item(fn: Callable[[], object], n_items: int, repeats: int = 1) -> float:
    """Seconds per item of `fn()` (which encodes `n_items` items): the best of `repeats` timed calls."""
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / max(n_items, 1)
