"""Worker for test_step_equivalence: several SGD steps through the real train_step under DeepSpeed, one run per
mode, each from a fresh engine, on this rank's share of qwen_case's fixed global batch. One launch may train under
several DeepSpeed configs (--job per config: ZeRO-2 and ZeRO-3 in one world).

A mode is `name[:chunk]`: cached, plain (train.grad_cache=false), lora, ckpt (gradient checkpointing), and the
negative controls nogather (the page gather without gradient flow), skipreplay (chunk 1's page gradients are
dropped before its replay) and nan (rank 1's loss is non-finite at step 1: every rank must skip it). Rank 0 writes
<out>/<mode>/init.safetensors and final.safetensors (gathered weights) and trace.json (per step: the loss averaged
over ranks, the engine's gradient norm, skipped).
"""

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.config import load_config
from pipeline.gc_phases import setting_up
from pipeline.train import dist
from pipeline.train.engine import build_engine
from pipeline.train.gradcache import GradCache
from pipeline.train.step import Encoder, StepContext, train_step
from tests.helpers import qwen_case


def gathered_state(engine) -> dict[str, torch.Tensor]:
    import deepspeed

    params = dict(engine.module.retriever.named_parameters())
    enabled = hasattr(next(iter(params.values())), "ds_id")
    with deepspeed.zero.GatheredParameters(list(params.values()), enabled=enabled):
        return {n: p.detach().clone().contiguous() for n, p in params.items()}


@dataclass
class LocalBatch:
    queries: object
    pages: object

    def __len__(self):
        return len(self.queries)


class SkipPageReplay(GradCache):
    """Negative control: chunk 1's pages are not back-propagated (their cached gradients are dropped)."""

    def replay(self, chunk, backward):
        if chunk == 1:
            start, stop = 1 * self.chunk_size, 2 * self.chunk_size
            for mv in self.pages.values():
                mv.vectors.grad[start:stop] = 0
        super().replay(chunk, backward)


class Context(StepContext):
    skip_page_replay: bool = False

    def encoding(self, encode):
        return SkipPageReplay(encode, self.chunk_size) if self.skip_page_replay else super().encoding(encode)


def nan_at_step_1_on_rank_1(step):
    def loss_fn(q, p, budgets, labels, step_):
        total, per = qwen_case.loss(q, p, budgets, labels, step_)
        return (total * float("nan") if step == 1 and dist.rank() == 1 else total), per
    return loss_fn


def run_mode(args, out_dir: str, ds_config: str, spec: str) -> None:
    name, _, chunk = spec.partition(":")
    variant = name if name in qwen_case.VARIANTS else "base"
    cfg = load_config(None, [f"data.global_batch={qwen_case.GLOBAL}", "train.grad_clip=0.0", "train.optimizer=sgd",
                             f"train.lr={args.lr}", "train.warmup_steps=0", f"train.steps={args.steps}",
                             "train.weight_decay=0.0", "model.dtype=float32", f"train.deepspeed_config={ds_config}"])
    with setting_up():  # as pipeline.train does: the steps' collections leave model and engine alone
        model = qwen_case.model(args.model_dir, variant)
        queries, pages = qwen_case.inputs(model)
        engine, _ = build_engine(Encoder(model), cfg, dist.world_size())
    init = gathered_state(engine)
    b, r = qwen_case.GLOBAL // dist.world_size(), dist.rank()
    local = LocalBatch(queries.slice(r * b, (r + 1) * b), pages.slice(r * b, (r + 1) * b))
    ctx = Context(engine, qwen_case.loss, qwen_case.budgets, int(chunk or b), grad_cache=name != "plain",
                  gather_grad=name != "nogather")
    ctx.skip_page_replay = name == "skipreplay"
    trace = []
    for step in range(args.steps):
        if name == "nan":
            ctx.loss_fn = nan_at_step_1_on_rank_1(step)
        out = train_step(ctx, local, step)
        norm = None if out.skipped else float(engine.get_global_grad_norm())
        trace.append({"loss": float(dist.mean_over_ranks(out.loss)), "grad_norm": norm, "skipped": out.skipped})
    final = gathered_state(engine)
    if r == 0:
        target = Path(out_dir) / spec.replace(":", "-c")
        target.mkdir(parents=True, exist_ok=True)
        save_file(init, str(target / "init.safetensors"))
        save_file(final, str(target / "final.safetensors"))
        (target / "trace.json").write_text(json.dumps(trace))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", nargs=3, action="append", required=True, metavar=("OUT", "DS_CONFIG", "MODES"),
                    help="modes (comma-separated) trained under DS_CONFIG, written to OUT; repeatable")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.005)
    args = ap.parse_args()
    dist.init()
    for out, ds_config, modes in args.job:
        for spec in modes.split(","):
            run_mode(args, out, ds_config, spec)
    dist.destroy()


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
