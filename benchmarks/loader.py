"""Benchmark: the training loader with verified bytes vs the training step it feeds (goal: >= 3x headroom).

    python benchmarks/loader.py [--pages 512] [--page 112] [--batch 16] [--chunk 4] [--steps 5] [--hidden 128]
                                [--big-mib 256]

One process, one run, side by side: (1) the start-up scan of the synthetic train split by the shard reader with
sha256 verification (data.verify_checksums=true, the default) and without it (headers and JSON records only);
(2) the loader: the real TrainStream + Collate (the tiny retriever's processor) producing local batches in the
main process (data.num_workers=0: the worst case, nothing overlaps the step); (3) the real gradient-cached
training step on a 1-process ZeRO-3 engine (benchmarks/grad_cache.py's set-up) on those batches; (4) the hash rate
of the start-up scan on a shard of incompressible page-sized members, as a fraction of a step. Headroom =
step time / loader time per batch, also with one epoch's verification charged to its batches. Defaults are the
demo recipe (configs/tiny.yaml: 112-px pages, batch 16, chunk 4, the 128-wide tiny Qwen2-VL): the smallest
model, so the step is fastest and the headroom the tightest.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.grad_cache import build, timed_steps  # noqa: E402  (sets the CPU DeepSpeed environment)


def scan_seconds(shards, verify: bool, repeats: int = 3) -> float:
    """Median seconds to scan every shard (the stream's start-up work) with or without sha256 verification."""
    from pipeline.data.reader import scan_shard

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for s in shards:
            scan_shard(s, verify=verify)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def big_shard_rate(tmp: Path, mib: int) -> tuple[float, float]:
    """(verified MiB/s, headers-only MiB/s) of the start-up scan on one shard of `mib` incompressible 1 MiB members
    (page-sized images: the synthetic pages are tiny, so their scan measures per-member overhead, not hashing)."""
    import os

    from pipeline.layout.shards import ShardInfo
    from pipeline.layout.tars import write_shard

    path = tmp / "train-000000.tar"
    entry = write_shard(path, [(f"k{i:05d}", {"json": b'{"queries": ["q"]}', "png": os.urandom(2**20)})
                               for i in range(mib)])
    info = ShardInfo(path, "train", entry["samples"], entry["bytes"], entry["sha256"])
    size = entry["bytes"] / 2**20
    return size / scan_seconds([info], True), size / scan_seconds([info], False)


def loader_seconds(stream, batches: int) -> tuple[float, object]:
    """(median seconds per local batch from the stream with its collate, the last batch)."""
    times, batch = [], None
    for step in range(batches + 1):
        t = time.perf_counter()
        batch = stream.transform(stream.raw_batch(step))
        if step:  # the first opens the shard files
            times.append(time.perf_counter() - t)
    return statistics.median(times), batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--page", type=int, default=112)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--big-mib", type=int, default=256, help="size of the incompressible shard for the hash rate")
    args = ap.parse_args()

    from pipeline.data.batch import Collate
    from pipeline.data.stream import TrainStream
    from pipeline.layout.shards import split_shards
    from pipeline.model.tiny import build_tiny_qwen2vl
    from tests.helpers.shards import write_shards

    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = write_shards(Path(tmp) / "shards", n_pages=args.pages, shard_size=args.shard_size, size=args.page)
        shards = split_shards(shard_dir, "train")
        mib = sum(s.bytes for s in shards) / 2**20
        verify_s, plain_s = scan_seconds(shards, True), scan_seconds(shards, False)
        (Path(tmp) / "big").mkdir()
        big_verified, big_plain = big_shard_rate(Path(tmp) / "big", args.big_mib)
        h = args.hidden
        model_dir = build_tiny_qwen2vl(Path(tmp) / "tiny", hidden=h, heads=max(h // 32, 1), kv_heads=max(h // 64, 1),
                                       vision_width=h, intermediate=2 * h, max_pixels=args.page * args.page)
        ctx, _ = build(str(model_dir), args.batch, args.chunk, True, args.page)
        stream = TrainStream(shards, args.batch, 1, 0, seed=0, transform=Collate(ctx.engine.module.retriever.processor))
        load_s, batch = loader_seconds(stream, 2 * args.steps)
        step_s = timed_steps({"grad_cache": ctx}, batch, args.steps)["grad_cache"]["wall_s"]
    per_epoch = max(args.pages // args.batch, 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    print(f"command: python benchmarks/loader.py --pages {args.pages} --page {args.page} --batch {args.batch} "
          f"--chunk {args.chunk} --steps {args.steps} --hidden {args.hidden} --big-mib {args.big_mib}   commit: {commit.strip()}")
    print(f"start-up scan of {len(shards)} shards ({mib:.1f} MiB): verified {verify_s:.3f} s "
          f"({mib / verify_s:.0f} MiB/s), headers only {plain_s:.3f} s ({mib / plain_s:.0f} MiB/s)")
    print(f"start-up scan of a {args.big_mib} MiB shard of 1 MiB members: verified {big_verified:.0f} MiB/s, "
          f"headers only {big_plain:.0f} MiB/s; verifying a batch of {args.batch} 1 MiB pages: "
          f"{args.batch / big_verified * 1000:.0f} ms = {args.batch / big_verified / step_s:.3f} of a step")
    print(f"loader {load_s * 1000:.1f} ms/batch ({args.batch / load_s:.0f} samples/s, 1 process) | "
          f"step {step_s * 1000:.1f} ms ({args.batch / step_s:.0f} samples/s)")
    charged = load_s + verify_s / per_epoch
    print(f"  headroom step / loader: {step_s / load_s:.1f}x; with one epoch's verification charged to its "
          f"{per_epoch} batches: {step_s / charged:.1f}x  (goal >= 3x)")


if __name__ == "__main__":
    main()
