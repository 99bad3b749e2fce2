"""What a budget costs: exact index bytes per page (stored vectors x bytes per vector at the budget's precision,
scales included) and encode time.

The vector count of a page at pool p is the number of non-empty p x p cells of its merged patch grid,
ceil(h/p)*ceil(w/p) for a page whose h*w grid cells are all real.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from pipeline.model.precision import bytes_per_vector


def bytes_per_page(vector_counts: list[int] | torch.Tensor, dim: int, precision: str = "fp16") -> float:
    """Mean index bytes per page from the vectors actually stored: counts [P] -> float (exact, no estimate;
    int8 vectors carry their float16 scale)."""
    counts = torch.as_tensor(vector_counts, dtype=torch.long)
    return float(counts.sum().item() * bytes_per_vector(dim, precision)) / max(len(counts), 1)


def time_per_item(fn: Callable[[], object], n_items: int, repeats: int = 1) -> float:
    """Seconds per item of `fn()` (which encodes `n_items` items): the best of `repeats` timed calls."""
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / max(n_items, 1)
