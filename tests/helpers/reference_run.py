"""The suite's reference training run (the `reference_run` fixture builds it once per session): the real
`python -m pipeline.train` on 2 ranks, ZeRO-3, gradient cache, checkpoints, the learning curve, SQLite MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers.procs import run, torchrun_cmd
from tests.helpers.shards import write_shards
from tests.helpers.training import ENV, write_config

STEPS = 8  # room for two interruptions (SIGTERM, kill -9) and a periodic checkpoint between them
TRAIN = dict(steps=STEPS, checkpoint_every=2, keep_checkpoints=2)  # what the resume tests re-run
CURVE = dict(eval_every=2, curve_budgets=["full", "L2-d32-p2"])  # on the training pages (eval.split=train)


def config(tmp: Path, name: str, model_dir: Path, shards: Path, curve: bool = True) -> Path:
    """The reference recipe's config for a run `tmp/<name>` (without the learning curve when `curve` is false)."""
    extra = CURVE if curve else {}
    return write_config(tmp, name, model_dir, shards, eval={"split": "train", "progress": False}, **TRAIN, **extra)


def build_reference_run(out: Path, model_dir: Path) -> Path:
    """Write the shards (24 pages) and train the reference run into `out`; returns its config."""
    out.mkdir(parents=True)
    shards = write_shards(out / "shards", n_pages=24, shard_size=8)  # 3 shards, 3 batches an epoch
    cfg = config(out, "ref", model_dir, shards)
    res = run(torchrun_cmd(2, "-m", "pipeline.train", "--config", str(cfg)), timeout=600, env=ENV)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:])
        raise RuntimeError(f"the reference training run failed ({res.returncode})")
    return cfg
