"""Benchmark: the real training step at the real size on the local GPUs (or a scaled-down model on CPU, said so).

    python benchmarks/gpu_step.py [--config configs/colqwen2_2b.yaml] [--pages-per-gpu 8] [--steps 3]
    torchrun --nproc_per_node 8 benchmarks/gpu_step.py ...          # ZeRO-3 over every local GPU

On CUDA: the configured architecture at full depth (shipped published config, random weights, bf16), the config's
LoRA and gradient checkpointing, DeepSpeed ZeRO-3 (the config's JSON) over the local GPUs, pages at the configured
max pixels. For each attention kernel (SDPA; FlashAttention 2 when flash_attn is installed) x gradient cache
on/off it times `--steps` steps after one warm-up and prints one JSON line: tokens/s, step seconds, MFU (model
FLOPs = forward + backward from pipeline.plan, over --peak-tflops per GPU), HFU (every executed FLOP), peak memory
per GPU (torch.cuda.max_memory_allocated) and the plan's estimate beside it. On CPU the same with a 256-wide
2-layer model and 112 px pages in float32 ("device": "cpu", "scaled_down": true): it proves the script, not speed.
No mlflow, webdataset or data shards are needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".venv" / "torch_extensions"))

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def page_images(n: int, max_pixels: int, side: int | None):
    """n synthetic pages at the largest 28-multiple size within max_pixels (aspect 5:4), or side x side."""
    from PIL import Image, ImageDraw

    if side is None:
        rows = int((max_pixels / 784 * 5 / 4) ** 0.5)
        w, h = (max_pixels // 784 // rows) * 28, rows * 28
    else:
        w = h = side
    out = []
    for i in range(n):
        img = Image.new("RGB", (w, h), "white")
        ImageDraw.Draw(img).text((20, 20 + 8 * i), f"page {i} " * 20, fill="black")
        out.append(img)
    return out


def model_dir(cfg, tmp: Path, cuda: bool) -> Path:
    """A random-weight checkpoint: the real architecture on CUDA, a scaled-down Qwen2-VL on CPU."""
    from pipeline.model.architectures import load_architecture
    from pipeline.model.tiny import build_random_checkpoint, build_tiny_qwen2vl

    if not cuda:
        return build_tiny_qwen2vl(tmp / "model", hidden=256, layers=2, heads=4, kv_heads=2, vision_width=256,
                                  intermediate=512, max_pixels=112 * 112)
    config = load_architecture(cfg.model.name_or_path)
    return build_random_checkpoint(config, tmp / "model", max_pixels=cfg.model.max_pixels or 1_003_520,
                                   dtype=torch.bfloat16, device="cuda")


def plan_figures(run_cfg, batch, budgets: list, world: int, chunk: int, cuda: bool):
    """(Workload, step FLOPs, planned GiB per GPU) of the batch actually run, from pipeline.plan."""
    from pipeline.plan import flops as fl
    from pipeline.plan.memory import Zero, gpu_memory
    from pipeline.plan.shape import model_shape
    from pipeline.plan.workload import Workload

    local, cache = len(batch), run_cfg.train.grad_cache
    shape = model_shape(run_cfg.model)
    w = Workload(world, local * world, local, min(chunk, local) if cache else local,
                 int(batch.pages.vector_mask.sum(1).max()), int(batch.pages.pixel_values.shape[0] // local),
                 int(batch.pages.attention_mask.sum(1).max()), int(batch.queries.vector_mask.sum(1).max()),
                 int(batch.queries.attention_mask.sum(1).max()))
    ckpt = run_cfg.model.gradient_checkpointing
    f = fl.step_flops(shape, w, len(budgets), ckpt, cache)
    zero = Zero.from_file(run_cfg.train.deepspeed_config)
    attn = "eager" if run_cfg.model.attn_implementation == "eager" else "sdpa"
    planned = gpu_memory(shape, w, zero, 2 if cuda else 4, run_cfg.train.optimizer, ckpt, attn, budgets)["total"]
    return w, f, planned


def run_one(cfg, path: Path, attn: str, grad_cache: bool, args, cuda: bool) -> dict:
    """Build retriever + engine for one setting, warm up, time args.steps steps; one result row."""
    from pipeline.cli import RunConfig
    from pipeline.config import load_config
    from pipeline.model.budgets import budget_grid
    from pipeline.model.retriever import Retriever
    from pipeline.train import dist
    from pipeline.train.engine import build_engine
    from pipeline.train.loss import matryoshka_loss, select_budgets
    from pipeline.train.step import Encoder, StepContext, train_step

    world, local = dist.world_size(), args.pages_per_gpu
    over = [f"model.name_or_path={path}", f"model.attn_implementation={attn}", f"data.global_batch={local * world}",
            f"train.chunk_size={args.chunk}", f"train.grad_cache={str(grad_cache).lower()}", "train.grad_clip=0.0"]
    if not cuda:
        over += ["model.dtype=float32", "model.max_pixels=12544", "model.lora.r=0", "model.exits=[1,2]"]
    run_cfg = load_config(args.config, over, root=RunConfig)
    torch.manual_seed(0)
    retriever = Retriever.from_pretrained(path, run_cfg.model)
    engine, _ = build_engine(Encoder(retriever), run_cfg, world)
    grid = budget_grid(retriever.exits, run_cfg.model.widths, run_cfg.model.pools)
    ctx = StepContext(engine, lambda q, p, b, labels, step: matryoshka_loss(q, p, b, run_cfg.loss, labels=labels),
                      lambda step: select_budgets(grid, run_cfg.loss, step), args.chunk, grad_cache=grad_cache)
    images = page_images(local, run_cfg.model.max_pixels or 1_003_520, None if cuda else 112)
    texts = [f"what is on page {i} of the report" for i in range(local)]
    batch = _Batch(retriever.processor.queries(texts).to(dist.device()),
                   retriever.processor.pages(images).to(dist.device()))
    train_step(ctx, batch, 0)  # warm-up: ZeRO-3 traces its prefetch order, kernels get picked
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        train_step(ctx, batch, step)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps

    w, f, planned = plan_figures(run_cfg, batch, select_budgets(grid, run_cfg.loss, 0), world, args.chunk, cuda)
    peak = args.peak_tflops * 1e12 * world
    del engine, retriever, ctx
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "scaled_down": not cuda, "gpus": world,
        "model": cfg.model.name_or_path if cuda else "tiny qwen2_vl (hidden 256, 2 layers)",
        "attn": attn, "grad_cache": grad_cache, "gradient_checkpointing": run_cfg.model.gradient_checkpointing,
        "lora_r": run_cfg.model.lora.r, "pages_per_gpu": local, "chunk": w.chunk, "page_tokens": w.page_tokens,
        "step_s": round(seconds, 4), "tokens_per_s": round(w.tokens_per_step / seconds, 1),
        "mfu": round(f["model"] / seconds / peak, 4) if cuda else None,
        "hfu": round(f["total"] / seconds / peak, 4) if cuda else None,
        "peak_tflops_per_gpu": args.peak_tflops,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "plan_memory_gib": round(planned, 2),
    }


class _Batch:
    def __init__(self, queries, pages):
        self.queries, self.pages = queries, pages

    def __len__(self):
        return len(self.queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "colqwen2_2b.yaml"))
    ap.add_argument("--pages-per-gpu", type=int, default=None, help="default 8 on CUDA, 4 on CPU")
    ap.add_argument("--chunk", type=int, default=None, help="gradient-cache chunk; default 4 on CUDA, 2 on CPU")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100 SXM spec)")
    ap.add_argument("--attn", default=None, help="comma list; default sdpa plus flash_attention_2 if installed")
    args = ap.parse_args()
    from pipeline.cli import RunConfig
    from pipeline.config import load_config
    from pipeline.logs import setup_logging
    from pipeline.train import dist

    setup_logging()
    cuda = torch.cuda.is_available()
    args.pages_per_gpu = args.pages_per_gpu or (8 if cuda else 4)
    args.chunk = args.chunk or (4 if cuda else 2)
    kernels = args.attn.split(",") if args.attn else ["sdpa"] + (
        ["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else [])
    dist.init()
    cfg = load_config(args.config, root=RunConfig)
    tmp = Path(tempfile.gettempdir()) / f"gpu_step_{os.environ.get('MASTER_PORT', 'local')}"
    if dist.is_rank0():  # one checkpoint on the node's disk, read by every local rank
        model_dir(cfg, tmp, cuda)
    dist.barrier()
    try:
        for attn in kernels:
            for grad_cache in (True, False):
                row = run_one(cfg, tmp / "model", attn, grad_cache, args, cuda)
                if dist.is_rank0():
                    print(json.dumps(row), flush=True)
                if cuda:
                    torch.cuda.empty_cache()
        dist.barrier()
    finally:
        if dist.is_rank0():
            shutil.rmtree(tmp, ignore_errors=True)
        dist.destroy()


if __name__ == "__main__":
    main()
