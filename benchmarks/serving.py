"""Benchmark what a budget variant saves when serving, each figure a ratio measured side by side in one run:

    python benchmarks/serving.py [--layers 8] [--hidden 256] [--page 224] [--pages 2000] [--repeats 5]

1. per exported variant (from disk, loaded alone): weights on disk and page-encode time / the full model's;
   encode time / the full model's early exit at the same depth (goal ~1.0: a variant is that early exit);
2. per budget and page-vector precision (fp16, int8, bin): index bytes per page and MaxSim top-10 search time
   per query over the flat index (the exact oracle) of `--pages` pages / the full budget's and / the same budget at fp16 (vectors
   random, on the page grid, pooled like real ones), and how many queries' top-10 equal the top-10 over the
   dequantised float vectors (the reference the codes stand for).
Sides alternate and medians are compared; the clock is this process's CPU time, so jobs on other cores
disturb the ratios less.
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

from pipeline.export.variants import export_variant, load_variant, weights_bytes  # noqa: E402
from pipeline.model.budgets import Budget  # noqa: E402
from pipeline.model.pooling import apply_budget, normalize  # noqa: E402
from pipeline.model.maxsim import topk_stream  # noqa: E402
from pipeline.model.precision import PRECISIONS  # noqa: E402
from pipeline.model.retriever import Retriever  # noqa: E402
from pipeline.model.tiny import build_tiny_qwen2vl  # noqa: E402
from pipeline.model.vectors import MultiVector  # noqa: E402
from pipeline.serve.engines.base import Page  # noqa: E402
from pipeline.serve.engines.flat import FlatEngine, pad  # noqa: E402

BUDGETS = {"full": (0, 128, 1), "balanced": (0, 32, 2), "tiny": (0, 16, 4), "half-depth": (-2, 64, 1),
           "quarter-depth": (-4, 32, 2)}


def medians(fns: dict, repeats: int) -> dict:
    """CPU seconds of each fn, alternating between them, median over `repeats` rounds."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            times[k].append(time.process_time() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def budgets_for(num_layers: int) -> dict[str, Budget]:
    """BUDGETS with depth 0 = all layers and -k = L/k."""
    out = {}
    for name, (layers, dim, pool) in BUDGETS.items():
        out[name] = Budget(num_layers if layers == 0 else (num_layers // -layers if layers < 0 else layers), dim, pool)
    return out


def bench_variants(args, work: Path) -> None:
    src = build_tiny_qwen2vl(work / "vlm", hidden=args.hidden, layers=args.layers, intermediate=4 * args.hidden,
                             max_pixels=args.page * args.page)
    exits = sorted({args.layers // 4, args.layers // 2, args.layers})
    from pipeline.config import ModelConfig

    full = Retriever.from_pretrained(src, ModelConfig(name_or_path=str(src), exits=exits)).eval()
    full.save_pretrained(work / "full")
    images = [Image.effect_noise((args.page, args.page), 60).convert("RGB") for _ in range(args.batch)]
    inputs = full.processor.pages(images)
    print(f"\n1. variants vs the full model ({args.layers} layers, hidden {args.hidden}, {args.batch} pages of "
          f"{args.page}px, CPU s medians of {args.repeats})")
    print(f"{'variant':>14} {'budget':>12} {'disk ratio':>10} {'enc/full':>9} {'enc/early-exit':>15}")
    full_disk = weights_bytes(work / "full")
    for name, b in budgets_for(args.layers).items():
        if b.layers not in full.exits:
            continue
        out = export_variant(full, b, work / "variants" / name, {"name": name, "budget": b.as_dict()})
        variant, _ = load_variant(out)
        with torch.no_grad():
            t = medians({"full": lambda: full.encode_pages(inputs),
                         "exit": lambda: full.encode_pages(inputs, [b.layers]),
                         "variant": lambda: variant.encode_pages(inputs)}, args.repeats)
        print(f"{name:>14} {str(b):>12} {weights_bytes(out) / full_disk:10.2f} "
              f"{t['variant'] / t['full']:9.2f} {t['variant'] / t['exit']:15.2f}")


def bench_search(args, work: Path) -> None:
    g = args.page // 28  # merged patch grid side
    torch.manual_seed(0)
    grids = torch.tensor([[g, g]] * args.pages)
    full = MultiVector(normalize(torch.randn(args.pages, g * g, 128)), torch.ones(args.pages, g * g, dtype=torch.bool),
                       grids)
    queries = normalize(torch.randn(16, 12, 128))
    print(f"\n2. search over the flat index (pipeline/serve/engines/flat.py) of {args.pages} pages ({g}x{g} grid), "
          "16 queries x 12 tokens, top-10, scored from the stored codes")
    print(f"{'budget':>20} {'bytes/page':>10} {'bytes ratio':>11} {'ms/query':>9} {'time ratio':>10} "
          f"{'vs fp16':>7} {'top-10 = dequantised':>20}")
    rows, fns, engines, qvs = {}, {}, {}, {}
    for name, (layers, dim, pool) in BUDGETS.items():
        if (dim, pool) in {v[:2] for v in rows.values()}:
            continue
        p = apply_budget(full, dim, pool)
        for precision in PRECISIONS:
            key = name if precision == "fp16" else f"{name}-{precision}"
            budget = Budget(None, dim, pool, precision)  # depth is the variants section's; the index needs none
            rows[key] = (dim, pool, name)
            engine = FlatEngine.create(work / "index" / key, [budget], {})
            engine.upsert([Page(str(i), str(i), 0, "drawn", {budget: v}) for i, v in enumerate(p.unpad())])
            engines[key] = FlatEngine.open(work / "index" / key)  # from disk, verified
            qvs[key] = [{budget: normalize(q[:, :dim])} for q in queries]
            fns[key] = lambda e=engines[key], qv=qvs[key], b=budget: e.search(qv, [(b, 10)])
    t = medians(fns, args.repeats)

    def codes_bytes(key: str) -> float:
        return next(iter(engines[key].shelves.values())).codes.nbytes / args.pages

    for key, (dim, pool, name) in rows.items():
        engine = engines[key]
        (budget, shelf), = engine.shelves.items()
        got = engine.search(qvs[key], [(budget, 10)])
        chunks = (shelf.pages(torch.arange(s, min(s + 512, args.pages))).dequantize() for s in range(0, args.pages, 512))
        _, want = topk_stream(pad([q[budget] for q in qvs[key]]), chunks, 10)  # the float reference
        same = sum([h.key for h in a] == [engine.keys[i] for i in b] for a, b in zip(got, want.tolist()))
        print(f"{key:>20} {codes_bytes(key):10.0f} {codes_bytes(key) / codes_bytes('full'):11.4f} "
              f"{1e3 * t[key] / 16:9.2f} {t[key] / t['full']:10.3f} {t[key] / t[name]:7.2f} {same:>17d}/16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--page", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"python benchmarks/serving.py {' '.join(sys.argv[1:])}  (commit {commit.strip()}, torch threads "
          f"{torch.get_num_threads()})")
    with tempfile.TemporaryDirectory() as tmp:
        bench_variants(args, Path(tmp))
        bench_search(args, Path(tmp))


if __name__ == "__main__":
    main()
