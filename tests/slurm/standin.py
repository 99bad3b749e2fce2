"""A stand-in training entry point for the Slurm script: proves the world and the preempt/requeue mechanics.

Run as `python -m tests.slurm.standin --config IGNORED out=DIR steps=N step_s=S` by every rank (torchrun sets
RANK/WORLD_SIZE/MASTER_*). Each rank joins one gloo world, all-reduces rank+1 and writes
DIR/attempt<R>/rank<r>.json. Then a counter "trains" for N steps: value_{s+1} = f(value_s, s); rank 0
appends every step to DIR/trajectory.jsonl. On USR1/TERM every rank agrees (all-reduce) to stop after the
current step, rank 0 checkpoints {step, value} atomically and all exit 143 (as pipeline.train); a rerun resumes
from that checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

_STOP = {"flag": False}


def _on_signal(signum, frame) -> None:
    _STOP["flag"] = True  # idempotent: Slurm and torchrun may both deliver it


def next_value(value: int, step: int) -> int:
    """The counter's update: depends on the whole history, so a lost or repeated step shows."""
    return (value * 31 + step + 7) % 1_000_000_007


def _args(argv: list[str]) -> dict[str, str]:
    out = {}
    it = iter(argv)
    for a in it:
        if a == "--config":
            next(it, None)
        elif "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    args = _args(argv)
    out, steps, step_s = Path(args["out"]), int(args.get("steps", 0)), float(args.get("step_s", 0.2))
    signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    adir = out / f"attempt{attempt}"
    adir.mkdir(parents=True, exist_ok=True)
    _write_json(adir / f"rank{rank}.json", {
        "rank": rank, "world": world, "local_rank": int(os.environ["LOCAL_RANK"]), "sum": int(total),
        "node": os.environ.get("SLURMD_NODENAME"), "node_id": int(os.environ.get("SLURM_NODEID", -1)),
        "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"})
    ckpt = out / "ckpt.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "value": 1}
    step, value = state["step"], state["value"]
    while step < steps:
        value = next_value(value, step)
        if rank == 0:
            with open(out / "trajectory.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "value": value, "attempt": attempt}) + "\n")
        step += 1
        time.sleep(step_s)
        stop = torch.tensor([int(_STOP["flag"])])
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if int(stop) and step < steps:
            break
    if rank == 0:
        _write_json(ckpt, {"step": step, "value": value})
        if step >= steps:
            _write_json(out / "done.json", {"step": step, "value": value, "attempt": attempt})
    dist.barrier()
    dist.destroy_process_group()
    return 0 if step >= steps else 143  # like pipeline.train: 143 = checkpointed after a signal


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
