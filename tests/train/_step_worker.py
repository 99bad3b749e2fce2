"""Worker for test_step_equivalence: one ZeRO-3 gradient-cached step on this rank's share of a fixed global batch.

Rank 0 writes the engine's initial weights (gathered) and the updated weights (gathered) as safetensors.
"""

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from pipeline.config import load_config
from pipeline.train import dist
from pipeline.train.engine import build_engine
from pipeline.train.step import Encoder, StepContext, train_step


def gathered_state(engine) -> dict[str, torch.Tensor]:
    import deepspeed

    params = dict(engine.module.retriever.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        return {n: p.detach().clone().contiguous() for n, p in params.items()}


@dataclass
class LocalBatch:
    queries: object
    pages: object

    def __len__(self):
        return len(self.queries)


def toy_setup(args):
    from tests.train.toy import Inputs, ToyRetriever, global_batch, toy_loss

    torch.manual_seed(0)
    model = ToyRetriever()
    q, p = global_batch(args.global_batch)
    budgets = [SimpleNamespace(layers=1), SimpleNamespace(layers=2)]
    return model, Inputs(q), Inputs(p), (lambda q, p, b, labels: toy_loss(q, p, b, labels)), (lambda step: budgets)


def qwen_setup(args):
    from tests.train.qwen_case import setup

    return setup(args.model_dir, args.global_batch)


def one_step(args, mode: str) -> None:
    """Build a fresh model and engine, make one step in `mode`, write out/<mode>/{init,after}.safetensors."""
    model, queries, pages, loss_fn, budgets_fn = (toy_setup if args.kind == "toy" else qwen_setup)(args)
    if mode == "nan":  # a non-finite loss on rank 1 only: every rank must skip the update
        base_fn = loss_fn
        loss_fn = lambda q, p, b, labels: (lambda t, pb: (t * float("nan") if dist.rank() == 1 else t, pb))(
            *base_fn(q, p, b, labels))
    cfg = load_config(None, [f"data.global_batch={args.global_batch}", "train.grad_clip=0.0", "train.optimizer=sgd",
                             f"train.lr={args.lr}", "train.warmup_steps=0", "model.dtype=float32",
                             f"train.deepspeed_config={args.out}/zero3_test.json"])
    engine, _ = build_engine(Encoder(model), cfg, dist.world_size())
    out = Path(args.out) / mode
    out.mkdir(parents=True, exist_ok=True)
    init = gathered_state(engine)
    b, r = args.global_batch // dist.world_size(), dist.rank()
    local = LocalBatch(queries.slice(r * b, (r + 1) * b), pages.slice(r * b, (r + 1) * b))
    ctx = StepContext(engine, loss_fn, budgets_fn, args.chunk, grad_cache=bool(args.grad_cache),
                      gather_grad=mode != "bad")
    res = train_step(ctx, local, 0)
    after = gathered_state(engine)
    if r == 0:
        save_file(init, str(out / "init.safetensors"))
        save_file(after, str(out / "after.safetensors"))
    json.dump({"loss": float(res.loss), "skipped": res.skipped}, open(out / f"loss.{r}.json", "w"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--kind", default="toy")
    ap.add_argument("--modes", default="good,bad")  # good | bad (gather without gradient flow) | nan
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--model-dir", default="")
    ap.add_argument("--grad-cache", type=int, default=1)
    args = ap.parse_args()
    dist.init()
    for mode in args.modes.split(","):
        one_step(args, mode)
    dist.destroy()


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
