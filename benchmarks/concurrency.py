"""Benchmark what the retriever's forward lock costs under concurrent calls, side by side in one run:

    python benchmarks/concurrency.py [--threads 8] [--calls 200] [--hidden 256] [--layers 4] [--device cpu]
                                     [--torch-threads N]

The same mixed calls (queries and pages, every exit, two pools) go through `Retriever.embed`:
  1 thread      one at a time (the reference answers);
  shared+lock   from --threads threads on one retriever (now: the backbone forward holds its lock);
  per-thread    from --threads threads, each on its own copy of the retriever: nothing shared, so no lock; the
                most any lock-free per-call capture could reach with the same compute;
  no lock       from --threads threads on one retriever with the lock made a no-op (before: the hook-based encode
                shared state between calls; its wrong and failed answers are counted, and a failed call returns
                early, so its rate is not a fair speed).
Printed: calls/s of each and the ratios. Wall clock (threads overlap); the sides alternate over --repeats rounds
and medians are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.model import backbone as bb  # noqa: E402
from pipeline.model.budgets import Budget  # noqa: E402
from pipeline.model.retriever import Retriever  # noqa: E402
from pipeline.model.tiny import build_tiny_qwen2vl  # noqa: E402


def mixed_calls(model: Retriever, n: int) -> list[tuple[str, object, Budget]]:
    """n calls alternating queries and pages (three page sizes), cycling through the exits and two pools."""
    g = torch.Generator().manual_seed(0)
    pages = [Image.fromarray(torch.randint(0, 255, (112, 112 + 28 * (i % 3), 3), generator=g,
                                           dtype=torch.uint8).numpy()) for i in range(6)]
    queries = ["which page shows the revenue", "QXB", "a longer query about the third quarter", "totals", "AB 12",
               "where is the signature"]
    return [("query", queries[i % 6], Budget(model.exits[i % len(model.exits)], model.dim, 1)) if i % 2 == 0
            else ("page", pages[i % 6], Budget(model.exits[i % len(model.exits)], model.dim, 1 + i // 2 % 2))
            for i in range(n)]


def call(model: Retriever, c) -> torch.Tensor:
    kind, item, budget = c
    return model.embed(**{"queries" if kind == "query" else "pages": [item]}, budget=budget)[0]


def run(model, calls: list, threads: int) -> tuple[float, list]:
    """(seconds, answers) of all calls from `threads` threads (1: in this thread, in order). `model`: a Retriever,
    or a function giving the calling thread's own one."""
    own = model if callable(model) and not isinstance(model, Retriever) else (lambda: model)
    t = time.perf_counter()
    if threads == 1:
        out = [call(own(), c) for c in calls]
    else:
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(lambda c: call(own(), c), c) for c in calls]
            out = []
            for f in futures:
                try:
                    out.append(f.result())
                except Exception as e:  # the unlocked encode can fail outright, not only answer wrongly
                    out.append(e)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--torch-threads", type=int, default=0, help="intra-op threads per call (0: torch's default)")
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_qwen2vl(Path(tmp) / "m", hidden=args.hidden, layers=args.layers, heads=8, kv_heads=4,
                                  intermediate=3 * args.hidden)
        model = Retriever.from_pretrained(path).to(args.device).eval()
    calls = mixed_calls(model, args.calls)
    reference = run(model, calls, 1)[1]
    lm = bb.language_model(model.backbone)
    layers = lm.layers  # unlocked threads can leave the layer list cut for good: restored after each run
    unlocked = copy.deepcopy(model)
    unlocked._forward_lock = contextlib.nullcontext()
    copies = threading.local()

    def per_thread() -> Retriever:
        if not hasattr(copies, "model"):
            copies.model = copy.deepcopy(model)
        return copies.model

    sides = {"1 thread": (model, 1), "shared+lock": (model, args.threads), "per-thread": (per_thread, args.threads),
             "no lock": (unlocked, args.threads)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    wrong = 0
    unlocked_lm = bb.language_model(unlocked.backbone)
    unlocked_layers = unlocked_lm.layers
    for _ in range(args.repeats):
        for side, (m, n) in sides.items():
            took, answers = run(m, calls, n)
            unlocked_lm.layers = unlocked_layers
            times[side].append(took)
            bad = sum(not (isinstance(a, torch.Tensor) and a.shape == r.shape and torch.equal(a, r))
                      for a, r in zip(answers, reference))
            if side == "no lock":
                wrong += bad
            elif bad:
                raise AssertionError(f"{side}: {bad} answers differ from the one-at-a-time answers")
    assert lm.layers is layers
    rate = {k: args.calls / statistics.median(v) for k, v in times.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# {' '.join(sys.argv)} (commit {commit.strip()}, torch threads {torch.get_num_threads()}, "
          f"{args.device}, decoder {args.layers} x {args.hidden}, {args.calls} mixed calls x {args.repeats} rounds)")
    print("  ".join(f"{k} {v:.1f} calls/s" for k, v in rate.items()))
    one = rate["1 thread"]
    print(f"{args.threads} threads / 1 thread: shared+lock {rate['shared+lock'] / one:.2f}, per-thread copies "
          f"{rate['per-thread'] / one:.2f}, no lock {rate['no lock'] / one:.2f}")
    print(f"shared+lock / per-thread copies (what the lock costs): {rate['shared+lock'] / rate['per-thread']:.2f}")
    print(f"no lock: {wrong} of {args.calls * args.repeats} threaded answers wrong or failed; shared+lock and "
          "per-thread: 0")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
