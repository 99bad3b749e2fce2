"""Benchmark what Python's cyclic garbage collector costs a training process, side by side in one run:

    python benchmarks/gc_setup.py [--steps 4] [--repeats 3]

The same short `python -m pipeline.train` (the tiny Qwen2-VL recipe of the tests, one CPU process, ZeRO-3, MLflow on
SQLite) runs alternately as shipped (pipeline.gc_phases.setting_up around the set-up: collections rare while
libraries, model and engine load, then all of it frozen) and with the collector left as Python sets it. Printed:
the median CPU seconds (user + system) and wall seconds of each, and their ratios. The set-up's share shrinks as a
run gets longer; the steps' collections walking only what the steps make is what a long run keeps.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The child: `as-python-sets-it` replaces the set-up phase with a context that does nothing.
CHILD = """
import contextlib, sys
import pipeline.train.loop as loop
if sys.argv[1] == "as-python-sets-it":
    loop.setting_up = contextlib.nullcontext
from pipeline.train.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def run_once(mode: str, config: Path, out: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one training into a fresh `out`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, mode, "--config", str(config), f"train.output_dir={out}",
                    f"tracking.tracking_uri=sqlite:///{out}.db"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from pipeline.model.tiny import build_tiny_qwen2vl
    from tests.helpers.shards import write_shards
    from tests.helpers.training import write_config

    modes = ("shipped", "as-python-sets-it")
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp:
        tmp = Path(tmp)
        model = build_tiny_qwen2vl(tmp / "model")
        shards = write_shards(tmp / "shards", n_pages=24, shard_size=8)
        config = write_config(tmp, "run", model, shards, steps=args.steps, checkpoint_every=args.steps)
        runs: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for r in range(args.repeats):
            for mode in modes if r % 2 == 0 else modes[::-1]:  # alternate which goes first
                runs[mode].append(run_once(mode, config, tmp / f"{mode}-{r}"))
    cpu = {m: statistics.median(c for c, _ in runs[m]) for m in modes}
    wall = {m: statistics.median(w for _, w in runs[m]) for m in modes}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# {' '.join(sys.argv)} (commit {commit.strip()}): python -m pipeline.train, tiny Qwen2-VL, {args.steps} "
          f"steps, 1 CPU process, median of {args.repeats}")
    for m in modes:
        print(f"  {m:<18} CPU {cpu[m]:6.2f} s   wall {wall[m]:6.2f} s")
    print(f"  shipped / as Python sets it: CPU {cpu['shipped'] / cpu[modes[1]]:.2f}x, "
          f"wall {wall['shipped'] / wall[modes[1]]:.2f}x")


if __name__ == "__main__":
    main()
