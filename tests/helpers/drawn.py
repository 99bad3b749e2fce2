"""Drawn page and query vectors for the engine tests (no model): unit vectors, 1-8 per page, at every budget a
collection of the tests stores (the page level gets the normalised mean, as the model computes it)."""

import torch

from pipeline.model.budgets import PAGE, Budget
from pipeline.model.pooling import normalize
from pipeline.serve.engines.base import Page

DIM = 16
BUDGETS = [Budget(2, DIM, 1), Budget(2, DIM, 1, "int8"), Budget(2, DIM, 1, "bin"), Budget(2, DIM, PAGE),
           Budget(2, DIM, PAGE, "bin")]
# The README's bound: Qdrant rounds the query to float16 (2^-11 relative per coordinate, at most 2^-11 per unit query
# vector), and for int8 the stored scale x code as well (twice that).
TOLERANCE = {"fp16": 2**-11, "int8": 2**-10, "bin": 2**-11}  # per query vector


def draw_pages(n: int, seed: int, prefix: str = "p") -> list[Page]:
    g = torch.Generator().manual_seed(seed)
    pages = []
    for i in range(n):
        v = normalize(torch.randn(int(torch.randint(1, 9, (1,), generator=g)), DIM, generator=g))
        vectors = {b: normalize(v.mean(0, keepdim=True)) if b.pool == PAGE else v for b in BUDGETS}
        pages.append(Page(f"{prefix}{i}", f"doc{i % 9}", i, "train-000000.tar", vectors))
    return pages


def draw_queries(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [dict.fromkeys(BUDGETS, normalize(torch.randn(3, DIM, generator=g))) for _ in range(n)]
