"""Concurrent calls for the concurrency tests: the same calls made one at a time and from many threads at once,
and the answers that differ."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch
from PIL import Image


def distinct_inputs(n_queries: int = 20, n_pages: int = 20) -> tuple[list[str], list[Image.Image]]:
    """Different query texts and random page images of three sizes (so a swapped answer shows)."""
    g = torch.Generator().manual_seed(7)
    words = ["revenue", "QXB", "signature", "table", "AB 12", "quarter", "page", "totals", "chart", "notes"]
    queries = [f"{words[i % 10]} {words[(3 * i + 1) % 10]} {i}" for i in range(n_queries)]
    sizes = [(112, 112), (140, 112), (112, 168)]
    pages = [Image.fromarray(torch.randint(0, 255, (sizes[i % 3][1], sizes[i % 3][0], 3), generator=g,
                                           dtype=torch.uint8).numpy()) for i in range(n_pages)]
    return queries, pages


def repeated(distinct: Sequence, fn: Callable, n: int) -> tuple[list, list]:
    """n calls that go through `distinct` in turn, and fn's one-at-a-time answer to each: fn runs once per
    distinct call (the same input gets the same answer), so the reference costs len(distinct) calls, not n."""
    answers = [fn(c) for c in distinct]
    return [distinct[i % len(distinct)] for i in range(n)], [answers[i % len(distinct)] for i in range(n)]


def hammer(fn: Callable, calls: Sequence, threads: int = 8) -> list:
    """fn(call) for every call from `threads` threads at once; an exception is kept as the answer."""
    def safe(c):
        try:
            return fn(c)
        except Exception as e:  # a wrong answer may also be a crash
            return e

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(safe, calls))


def differing(answers: Sequence, reference: Sequence, same: Callable) -> list[int]:
    """Indices whose answer is an exception or not `same` as the reference."""
    return [i for i, (a, r) in enumerate(zip(answers, reference)) if isinstance(a, Exception) or not same(a, r)]


def same_tensors(a, b) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
