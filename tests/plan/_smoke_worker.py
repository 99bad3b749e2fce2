"""Worker for test_real_width: on each of 2 ranks, a real-width truncated checkpoint under ZeRO-3 makes one
gradient-cached step and, from the same start, one plain step; rank 0 writes both results (trainable parameters,
gathered) and, after the cached step, the whole retriever to OUT/final.

    torchrun --nproc_per_node 2 tests/plan/_smoke_worker.py MODEL_DIR OUT --side PX [--lora R] [--page-size PX]
"""

import argparse
import io
import json
import os
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.config import LoraConfig, LossConfig, ModelConfig, load_config
from pipeline.model.budgets import budget_grid
from pipeline.model.retriever import Retriever
from pipeline.train import dist
from pipeline.train.engine import build_engine
from pipeline.train.loss import matryoshka_loss, select_budgets
from pipeline.train.step import Encoder, StepContext, train_step
from tests.helpers.shards import _page
from tests.train._step_worker import LocalBatch

CODES = ["ABC", "QRS", "XYZ", "LMN"]
LOSS = LossConfig(temperature=0.05, budgets="grid")


def batch(retriever, side: int):
    images = [Image.open(io.BytesIO(_page(c, i % 3, 112))).convert("RGB").resize((side, side))
              for i, c in enumerate(CODES)]
    return retriever.processor.queries(CODES), retriever.processor.pages(images)


def trainable(engine, only: str = "") -> dict[str, torch.Tensor]:
    """Rank 0's copy of the trainable parameters whose names start with `only` (every rank joins the gather)."""
    import deepspeed

    params = {n: p for n, p in engine.module.retriever.named_parameters() if p.requires_grad and n.startswith(only)}
    with deepspeed.zero.GatheredParameters(list(params.values())):
        return {n: p.detach().clone().contiguous() for n, p in params.items()} if dist.rank() == 0 else {}


def one_step(args, grad_cache: bool) -> None:
    torch.manual_seed(0)  # LoRA's A matrices: the same start in both modes
    mc = ModelConfig(name_or_path=args.model_dir, dim=128, exits=[1, 2], widths=[128, 32], pools=[1, 2],
                     dtype="float32", attn_implementation="sdpa", gradient_checkpointing=True,
                     max_pixels=args.side * args.side, lora=LoraConfig(r=args.lora, dropout=0.0))
    model = Retriever.from_pretrained(args.model_dir, mc)
    queries, pages = batch(model, args.side)
    grid = budget_grid(model.exits, mc.widths, mc.pools)
    cfg = load_config(None, ["data.global_batch=4", "train.grad_clip=0.0", "train.optimizer=sgd", "train.lr=0.5",
                             "train.warmup_steps=0", "model.dtype=float32",
                             f"train.deepspeed_config={args.out}/zero3_test.json"])
    engine, _ = build_engine(Encoder(model), cfg, dist.world_size())
    init = trainable(engine, only="heads.")  # the heads always train: enough to see the step moved
    r = dist.rank()
    local = LocalBatch(queries.slice(2 * r, 2 * r + 2), pages.slice(2 * r, 2 * r + 2))
    ctx = StepContext(engine, lambda q, p, b, labels, step: matryoshka_loss(q, p, b, LOSS, labels=labels),
                      lambda step: select_budgets(grid, LOSS, step), chunk_size=1, grad_cache=grad_cache)
    out = train_step(ctx, local, 0)
    after = trainable(engine)
    name = "cached" if grad_cache else "plain"
    if r == 0:
        save_file(after, str(Path(args.out) / f"{name}.safetensors"))
        moved = max(float((after[k] - init[k]).abs().max()) for k in init)
        json.dump({"loss": float(out.loss), "moved": moved, "n_trainable": sum(v.numel() for v in after.values())},
                  open(Path(args.out) / f"{name}.json", "w"))
    if grad_cache:
        import deepspeed

        params = list(model.parameters())
        with deepspeed.zero.GatheredParameters(params):
            if r == 0:
                model.save_pretrained(Path(args.out) / "final")
    dist.barrier()
    del engine, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--side", type=int, default=112)
    ap.add_argument("--lora", type=int, default=0)
    args = ap.parse_args()
    dist.init()
    one_step(args, True)
    one_step(args, False)
    dist.destroy()


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
