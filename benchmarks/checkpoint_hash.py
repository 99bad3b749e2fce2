"""Benchmark what content hashes cost a checkpoint, side by side in one run:

    python benchmarks/checkpoint_hash.py [--params 20e6] [--repeats 3] [--dir DIR]

A one-rank DeepSpeed ZeRO-3 engine (fp32 master weights and two AdamW moments: about 12 bytes per parameter)
saves its checkpoint with `engine.save_checkpoint` as training does, then `hash_files` hashes every file as
`Checkpointer.save` does; on resume `problem(..., content=True)` re-hashes them before `engine.load_checkpoint` loads. Printed: the
checkpoint's size, median seconds of each, and the ratios hash/save and verify/load. `--dir` picks the disk
(default: a temporary directory under /tmp); the files are fresh in the page cache when hashed at save, so that
ratio is the one a run sees, while a resume after a reboot reads them from disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.train import dist  # noqa: E402
from pipeline.train.checkpoint import checkpoint_files, hash_files, problem  # noqa: E402


def engine_of(params: int):
    """A ZeRO-3 engine around a stack of 1024-wide linears holding about `params` parameters, after one step."""
    import deepspeed

    layers = max(1, round(params / (1024 * 1024)))
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(layers)])
    ds = json.loads((ROOT / "deepspeed_configs" / "zero3.json").read_text())
    ds.update(train_batch_size=4, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=1,
              gradient_clipping=0.0, bf16={"enabled": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    engine.backward(engine(torch.randn(4, 1024)).square().mean())
    engine.step()
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=20e6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    dist.init()
    engine = engine_of(int(args.params))
    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir))
    times: dict[str, list[float]] = {"save": [], "hash": [], "verify": [], "load": []}
    try:
        for r in range(args.repeats):
            tag = f"step-{r:08d}"
            t = time.perf_counter()
            engine.save_checkpoint(str(root), tag=tag, save_latest=False)
            times["save"].append(time.perf_counter() - t)
            names = checkpoint_files(root / tag)
            t = time.perf_counter()
            records = hash_files(root / tag, names)
            times["hash"].append(time.perf_counter() - t)
            (root / tag / "complete.json").write_text(json.dumps({"step": r, "files": records}))
            t = time.perf_counter()
            assert problem(root / tag, content=True) is None
            times["verify"].append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
            times["load"].append(time.perf_counter() - t)
            size = sum(r["bytes"] for r in records.values())
            shutil.rmtree(root / tag)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        dist.destroy()
    med = {k: statistics.median(v) for k, v in times.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# {' '.join(sys.argv)} (commit {commit.strip()}; checkpoint {size / 1e6:.0f} MB, median of "
          f"{args.repeats})")
    print(f"save {med['save']:.2f} s, sha256 at save {med['hash']:.2f} s: hash/save {med['hash'] / med['save']:.2f}")
    print(f"load {med['load']:.2f} s, sha256 check before it {med['verify']:.2f} s: verify/load "
          f"{med['verify'] / med['load']:.2f}")
    print(f"sha256 throughput {size / 1e6 / med['hash']:.0f} MB/s")


if __name__ == "__main__":
    main()
