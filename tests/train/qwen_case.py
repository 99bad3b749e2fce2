"""The tiny Qwen2-VL retriever case shared by the equivalence worker and the single-process reference."""

from __future__ import annotations

import io

from PIL import Image

from pipeline.config import LossConfig, ModelConfig
from pipeline.model.budgets import budget_grid
from pipeline.model.retriever import Retriever
from pipeline.train.loss import matryoshka_loss, select_budgets
from tests.data.synthetic import _page

CODES = ["ABC", "QRS", "XYZ", "LMN", "DEF", "TUV", "GHI", "OPQ", "JKL", "WXY", "MNO", "BCD"]
MODEL = ModelConfig(dim=32, exits=[2, 4], widths=[32, 8], pools=[1, 2], dtype="float32", attn_implementation="eager")
LOSS = LossConfig(temperature=0.05, budgets="grid")


def model(model_dir: str) -> Retriever:
    return Retriever.from_pretrained(model_dir, MODEL)


def inputs(retriever: Retriever, n: int):
    """(QueryInputs [n], PageInputs [n]) for the first n codes: page i shows code i (on row i % 3)."""
    images = [Image.open(io.BytesIO(_page(c, i % 3, 112))).convert("RGB") for i, c in enumerate(CODES[:n])]
    return retriever.processor.queries(CODES[:n]), retriever.processor.pages(images)


def budgets(retriever: Retriever) -> list:
    return select_budgets(budget_grid(retriever.exits, MODEL.widths, MODEL.pools), LOSS, 0)


def loss(q, p, budget_list, labels=None):
    return matryoshka_loss(q, p, budget_list, LOSS, labels=labels)


def setup(model_dir: str, global_batch: int):
    """What the equivalence worker needs: (model, queries, pages, loss_fn, budgets_fn)."""
    r = model(model_dir)
    q, p = inputs(r, global_batch)
    b = budgets(r)
    return r, q, p, loss, (lambda step: b)
