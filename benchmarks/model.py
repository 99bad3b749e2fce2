"""Benchmark the model side, each figure a ratio measured side by side in one run:

    python benchmarks/model.py [--layers 16] [--hidden 512] [--batch 4] [--page 224] [--repeats 5] [--device cpu]

1. encode time at each exit / full-depth encode time, on a random Qwen2-VL whose decoder dominates
   (goal: <= 0.45 at L/4: real early exit runs only the first L/4 decoder layers);
2. forward+backward time of the loss over the whole budget grid / the single full-budget loss;
3. MaxSim throughput / a straightforward einsum reference (goal >= 1.0; both unmasked-equivalent work).
Timings alternate between the compared sides and the medians are compared. On a CPU device the clock is this
process's CPU time (both threads), so other jobs on shared cores disturb the ratios less; on CUDA it is wall time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import LossConfig, ModelConfig  # noqa: E402
from pipeline.model.budgets import budget_grid  # noqa: E402
from pipeline.model.maxsim import maxsim  # noqa: E402
from pipeline.model.pooling import normalize  # noqa: E402
from pipeline.model.retriever import Retriever  # noqa: E402
from pipeline.model.tiny import build_tiny_qwen2vl  # noqa: E402
from pipeline.model.vectors import MultiVector  # noqa: E402
from pipeline.train.loss import matryoshka_loss  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> float:
    """CPU seconds of this process on a CPU device (robust to other jobs sharing the cores), else wall seconds."""
    return time.process_time() if device == "cpu" else time.perf_counter()


def alternate(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per call of each fn, calls interleaved round-robin (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = clock(device)
            fn()
            sync(device)
            times[name].append(clock(device) - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_encode(args, tmp: Path) -> None:
    path = build_tiny_qwen2vl(tmp / "bench-qwen2vl", hidden=args.hidden, layers=args.layers, heads=8, kv_heads=4,
                              vision_depth=1, vision_width=64, intermediate=3 * args.hidden,
                              max_pixels=args.page * args.page)
    model = Retriever.from_pretrained(path, ModelConfig(name_or_path=str(path))).to(args.device).eval()
    g = torch.Generator().manual_seed(0)
    imgs = [Image.fromarray(torch.randint(0, 255, (args.page, args.page, 3), generator=g, dtype=torch.uint8).numpy())
            for _ in range(args.batch)]
    pages = model.processor.pages(imgs).to(args.device)
    queries = model.processor.queries(["which page shows the quarterly revenue of QXB"] * args.batch).to(args.device)
    for kind, inputs, encode in (("pages", pages, model.encode_pages), ("queries", queries, model.encode_queries)):
        with torch.no_grad():
            med = alternate({e: (lambda e=e: encode(inputs, exits=[e])) for e in model.exits}, args.repeats, args.device)
        full = med[model.num_layers]
        print(f"encode {kind} (batch {args.batch}, {inputs.input_ids.shape[1]} tokens; decoder {args.layers} x "
              f"{args.hidden}): full depth {full * 1e3:.1f} ms")
        for e in model.exits:
            goal = "  (goal <= 0.45)" if e == model.exits[0] else ""
            print(f"  exit {e:>2} / {model.num_layers}: {med[e] * 1e3:8.1f} ms   ratio {med[e] / full:.3f}{goal}")


def fake_exits(b: int, n: int, grid: tuple[int, int] | None, exits: list[int], device: str) -> dict[int, MultiVector]:
    g = torch.Generator().manual_seed(n)
    out = {}
    for e in exits:
        v = normalize(torch.randn(b, n, 128, generator=g)).to(device).requires_grad_()
        grids = None if grid is None else torch.tensor([grid] * b)
        out[e] = MultiVector(v, torch.ones(b, n, dtype=torch.bool, device=device), grids)
    return out


def bench_loss(args) -> None:
    exits = [args.layers // 4, args.layers // 2, 3 * args.layers // 4, args.layers]
    grid = budget_grid(exits, [128, 64, 32, 16], [1, 2, 4])
    q = fake_exits(args.loss_batch, 16, None, exits, args.device)
    p = fake_exits(args.loss_batch, 256, (16, 16), exits, args.device)
    cfg = LossConfig(temperature=0.02)

    def run(budgets):
        total, _ = matryoshka_loss(q, p, budgets, cfg)
        total.backward()

    med = alternate({"grid": lambda: run(grid), "full": lambda: run(grid[:1])}, args.repeats, args.device)
    print(f"loss fwd+bwd (batch {args.loss_batch}, 16 query / 256 page vectors): full budget {med['full'] * 1e3:.1f} ms, "
          f"whole grid ({len(grid)} budgets) {med['grid'] * 1e3:.1f} ms   ratio {med['grid'] / med['full']:.2f}")


def bench_maxsim(args) -> None:
    g = torch.Generator().manual_seed(1)
    bq, nq, bp, np_ = args.ms_queries, 16, args.ms_pages, 256
    q = normalize(torch.randn(bq, nq, 128, generator=g)).to(args.device)
    p = normalize(torch.randn(bp, np_, 128, generator=g)).to(args.device)
    qm = MultiVector(q, torch.ones(bq, nq, dtype=torch.bool, device=args.device))
    pm = MultiVector(p, torch.ones(bp, np_, dtype=torch.bool, device=args.device))

    def reference():
        return torch.einsum("bnd,cmd->bcnm", q, p).max(dim=-1).values.sum(dim=-1)

    with torch.no_grad():
        torch.testing.assert_close(maxsim(qm, pm), reference(), rtol=1e-4, atol=1e-3)
        med = alternate({"ours": lambda: maxsim(qm, pm), "einsum": reference}, args.repeats, args.device)
    pairs = bq * bp
    print(f"maxsim {bq} queries x {bp} pages ({nq} x {np_} vectors, d 128): ours {pairs / med['ours']:.0f} pairs/s, "
          f"einsum {pairs / med['einsum']:.0f} pairs/s   ratio {med['einsum'] / med['ours']:.2f}  (goal >= 1.0)")
    qg, pg = q.clone().requires_grad_(), p.clone().requires_grad_()

    def train_ours():
        maxsim(MultiVector(qg, qm.mask), MultiVector(pg, pm.mask)).sum().backward()

    def train_reference():
        torch.einsum("bnd,cmd->bcnm", qg, pg).max(dim=-1).values.sum().backward()

    med = alternate({"ours": train_ours, "einsum": train_reference}, args.repeats, args.device)
    print(f"maxsim forward+backward: ours {pairs / med['ours']:.0f} pairs/s, einsum autograd "
          f"{pairs / med['einsum']:.0f} pairs/s   ratio {med['einsum'] / med['ours']:.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--page", type=int, default=224, help="page side in px (multiple of 28)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loss-batch", type=int, default=32)
    ap.add_argument("--ms-queries", type=int, default=32)
    ap.add_argument("--ms-pages", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipeline", "benchmarks"], cwd=ROOT,
                           capture_output=True, text=True).stdout
    print(f"command: python benchmarks/model.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"commit: {commit.strip()}{' (dirty)' if dirty.strip() else ''}  device: {args.device}  "
          f"torch threads: {torch.get_num_threads()}  clock: {'process CPU time' if args.device == 'cpu' else 'wall'}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_encode(args, Path(tmp))
    bench_loss(args)
    bench_maxsim(args)


if __name__ == "__main__":
    main()
