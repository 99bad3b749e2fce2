"""Benchmark: the gradient-cached training step vs plain steps (time), and its peak memory at global batch 64 vs 8.

    python benchmarks/grad_cache.py [--batch 16] [--chunk 8] [--steps 3] [--page 224] [--hidden 512]

One process, the real step (pipeline.train.step) on a DeepSpeed ZeRO-3 engine around the tiny random Qwen2-VL
retriever, every budget of a 2 exits x 2 widths x 2 pools grid. Time: three steps alternate on the same batch
after a warm-up: the grad-cache step, the plain step, and the plain step with activation checkpointing (the fair
comparison: it too runs the forward twice to bound memory); medians of wall and CPU time (the CPU clock is
steadier on a shared machine). Memory: each setting runs in a fresh process; peak RSS (VmHWM, reset through
/proc/self/clear_refs once the engine is built) over one step, for the whole process and as the increment over
the set-up. Goals: grad cache / checkpointed plain <= 1.05; peak memory at global batch 64 / 8 <= 1.10.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".venv" / "torch_extensions"))
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def make_batch(processor, n: int, page: int):
    """n (query, page) pairs: page i shows a 3-letter code, the query is that code."""
    from PIL import Image, ImageDraw, ImageFont

    from pipeline.data.batch import Batch

    codes = [chr(65 + i % 26) + chr(65 + (i // 26) % 26) + chr(65 + (i * 7) % 26) for i in range(n)]
    images = []
    for i, code in enumerate(codes):
        img = Image.new("RGB", (page, page), "white")
        ImageDraw.Draw(img).text((8, 4 + 28 * (i % 3)), code, fill="black", font=ImageFont.load_default(size=20))
        images.append(Image.open(io.BytesIO(_png(img))).convert("RGB"))
    return Batch(0, codes, processor.queries(codes), processor.pages(images))


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build(model_dir: str, batch: int, chunk: int, grad_cache: bool, page: int, checkpointing: bool = False):
    """(step context, local batch) on a 1-process ZeRO-3 engine (activation checkpointing on or off)."""
    from pipeline.config import load_config
    from pipeline.train import dist
    from pipeline.train.engine import build_engine
    from pipeline.train.loop import build_model, build_step_context
    from pipeline.train.step import Encoder

    cfg = load_config(None, [f"model.name_or_path={model_dir}", "model.dim=32", "model.exits=[2,4]",
                             "model.widths=[32,8]", "model.pools=[1,2]", f"data.global_batch={batch}",
                             f"train.chunk_size={chunk}", f"train.grad_cache={grad_cache}", "train.lr=1.0e-4",
                             f"model.gradient_checkpointing={checkpointing}"])
    dist.init()
    retriever = build_model(cfg)
    engine, _ = build_engine(Encoder(retriever), cfg, dist.world_size())
    return build_step_context(cfg, engine, retriever), make_batch(retriever.processor, batch, page)


def timed_steps(contexts: dict, batch, steps: int) -> dict:
    """{name: step context} -> {name: median wall and CPU seconds per step}, the steps interleaved."""
    from pipeline.train.step import train_step

    runs = {name: ([], []) for name in contexts}
    for ctx in contexts.values():  # warm-up (ZeRO-3 traces its prefetch order on the first step)
        train_step(ctx, batch, 0)
    for i in range(steps):
        for name, ctx in contexts.items():
            w, c = time.perf_counter(), time.process_time()
            train_step(ctx, batch, i + 1)
            runs[name][0].append(time.perf_counter() - w)
            runs[name][1].append(time.process_time() - c)
    return {k: {"wall_s": statistics.median(v[0]), "cpu_s": statistics.median(v[1])} for k, v in runs.items()}


def measure_memory(args) -> None:
    """Child mode: build, reset the peak, one step, print {"base_kib", "setup_kib", "peak_kib"} (base: after the
    libraries are imported, before anything is built)."""
    import pipeline.train.loop  # noqa: F401
    from pipeline.train.engine import import_deepspeed

    import_deepspeed()  # before the baseline, like everything the build needs (as a rank imports it)
    from pipeline.train.step import train_step

    base = rss_kib("VmRSS")
    ctx, batch = build(args.model_dir, args.mem_batch, args.chunk, bool(args.mem_grad_cache), args.page)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    setup = rss_kib("VmRSS")
    train_step(ctx, batch, 0)
    print(json.dumps({"base_kib": base, "setup_kib": setup, "peak_kib": rss_kib("VmHWM")}))


def child_memory(args, batch: int, grad_cache: bool) -> dict:
    cmd = [sys.executable, __file__, "--model-dir", args.model_dir, "--mem-batch", str(batch), "--chunk",
           str(args.chunk), "--mem-grad-cache", str(int(grad_cache)), "--page", str(args.page)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--page", type=int, default=224)
    ap.add_argument("--hidden", type=int, default=512, help="text and vision width of the tiny Qwen2-VL")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--mem-batch", type=int, default=0)
    ap.add_argument("--mem-grad-cache", type=int, default=1)
    args = ap.parse_args()
    if args.mem_batch:
        return measure_memory(args)
    from pipeline.model.tiny import build_tiny_qwen2vl

    with tempfile.TemporaryDirectory() as tmp:
        h = args.hidden
        args.model_dir = str(build_tiny_qwen2vl(Path(tmp) / "tiny-qwen2vl", hidden=h, heads=h // 64, kv_heads=h // 128,
                                                vision_width=h, intermediate=4 * h, max_pixels=args.page * args.page))
        mem = {b: child_memory(args, b, True) for b in (8, 64)}
        mem_plain = {b: child_memory(args, b, False) for b in (8, 64)}
        ctx_gc, batch = build(args.model_dir, args.batch, args.chunk, True, args.page)
        ctx_ac, _ = build(args.model_dir, args.batch, args.chunk, False, args.page, checkpointing=True)
        contexts = {"grad_cache": ctx_gc, "plain": dataclasses.replace(ctx_gc, grad_cache=False),
                    "plain_checkpointed": ctx_ac}
        times = timed_steps(contexts, batch, args.steps)
    report(args, times, mem, mem_plain)


def report(args, times: dict, mem: dict, mem_plain: dict) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    print(f"command: python benchmarks/grad_cache.py --batch {args.batch} --chunk {args.chunk} --steps {args.steps} "
          f"--page {args.page} --hidden {args.hidden}   commit: {commit.strip()}   torch threads: {__import__('torch').get_num_threads()}")
    gc = times["grad_cache"]
    print(f"step time, global batch {args.batch}, chunk {args.chunk}: " + " | ".join(
        f"{name} {t['wall_s']:.3f} s wall {t['cpu_s']:.3f} s cpu" for name, t in times.items()))
    for name, goal in (("plain_checkpointed", "  (goal <= 1.05: both run the forward twice)"),
                       ("plain", "  (no recompute: the floor is near (2F+B)/(F+B) ~ 1.33)")):
        t = times[name]
        print(f"  ratio grad-cache / {name}: wall {gc['wall_s'] / t['wall_s']:.2f}, "
              f"cpu {gc['cpu_s'] / t['cpu_s']:.2f}{goal}")
    for name, m in (("grad cache", mem), ("plain", mem_plain)):
        inc = {b: m[b]["peak_kib"] - m[b]["setup_kib"] for b in m}
        print(f"peak RSS, {name}: batch 8 {m[8]['peak_kib'] / 1024:.0f} MiB (+{inc[8] / 1024:.0f} over set-up), "
              f"batch 64 {m[64]['peak_kib'] / 1024:.0f} MiB (+{inc[64] / 1024:.0f})")
        print(f"  ratio 64 / 8: process {m[64]['peak_kib'] / m[8]['peak_kib']:.2f}, step increment "
              f"{inc[64] / max(inc[8], 1):.2f}" + ("  (goal <= 1.10)" if name == "grad cache" else ""))


if __name__ == "__main__":
    main()
