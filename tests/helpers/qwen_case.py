"""The tiny Qwen2-VL retriever case shared by the step-equivalence worker and the single-process reference.

A fixed global batch of GLOBAL pairs: page i shows code i; the first half of the pages are 112 x 112 (16 vectors)
and the second half 168 x 112 (24 vectors), so ranks hold pages of different sizes and the page exchange pads.
Budgets: the whole (exit, width, pool) grid at step 0, then the full budget plus 2 sampled ones per step (step 1
leaves exit 2's head unused, steps 2 and 3 use it again).
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from pipeline.config import LoraConfig, LossConfig, ModelConfig
from pipeline.model.budgets import Budget, budget_grid
from pipeline.model.retriever import Retriever
from pipeline.train.loss import matryoshka_loss, select_budgets

GLOBAL = 6  # 1, 2 and 3 ranks all divide it
CODES = ["ABC", "QRS", "XYZ", "LMN", "DEF", "TUV"]
LOSS = LossConfig(temperature=0.05, budgets="grid", sample_k=2, sample_seed=8)
GRID = budget_grid([2, 4], [32, 8], [1, 2])
VARIANTS = ("base", "lora", "ckpt")  # what the model config turns on (gradient checkpointing keeps base's math)


def model_config(variant: str = "base") -> ModelConfig:
    lora = LoraConfig(r=4, alpha=8, dropout=0.0) if variant == "lora" else LoraConfig()
    return ModelConfig(dim=32, exits=[2, 4], widths=[32, 8], pools=[1, 2], dtype="float32",
                       attn_implementation="eager", lora=lora, gradient_checkpointing=variant == "ckpt")


def model(model_dir: str, variant: str = "base") -> Retriever:
    return Retriever.from_pretrained(model_dir, model_config(variant))


def _page(code: str, width: int) -> Image.Image:
    img = Image.new("RGB", (width, 112), "white")
    ImageDraw.Draw(img).text((8, 30), code, fill="black", font=ImageFont.load_default(size=20))
    return img


def inputs(retriever: Retriever):
    """(QueryInputs [GLOBAL], PageInputs [GLOBAL]) of the fixed global batch."""
    images = [_page(c, 112 if i < GLOBAL // 2 else 168) for i, c in enumerate(CODES[:GLOBAL])]
    return retriever.processor.queries(CODES[:GLOBAL]), retriever.processor.pages(images)


def budgets(step: int) -> list[Budget]:
    return list(GRID) if step == 0 else select_budgets(GRID, LOSS, step)


def loss(q, p, budget_list, labels=None, step=0):
    return matryoshka_loss(q, p, budget_list, LOSS, labels=labels, step=step)
