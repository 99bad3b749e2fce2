"""Training runs for the tests: the config they write, starting and interrupting `python -m pipeline.train`, reading
what a run wrote, and copying a finished run (with its SQLite MLflow store) before a test changes it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from tests.helpers.procs import ROOT, kill_job

ENV = {"PYTHONPATH": str(ROOT)}
# The suite's reference recipe: 4 decoder layers (exits 1-4), width 128 with a 32-wide prefix, pools 1 and 2.
MODEL = {"dim": 128, "widths": [128, 32], "pools": [1, 2]}


def write_config(tmp: Path, name: str, model_dir: Path, shards: Path, model: dict | None = None,
                 eval: dict | None = None, **train) -> Path:
    """A run config `tmp/<name>.yaml`: output `tmp/<name>`, SQLite MLflow `tmp/<name>.db`, `train` keys on top."""
    cfg = {
        "model": {"name_or_path": str(model_dir), **(MODEL if model is None else model)},
        "loss": {"temperature": 0.05},
        "data": {"shards": str(shards), "global_batch": 8},
        "train": {"output_dir": str(tmp / name), "chunk_size": 4, "lr": 3e-3, "warmup_steps": 3, "log_every": 1,
                  **train},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / name}.db", "experiment": "test"},
        "eval": eval or {},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def copy_run(cfg: Path, dst: Path, name: str) -> Path:
    """Copy a finished run (output dir, SQLite store, artifacts) written by `write_config` to `dst/<name>*`, and
    point the copy's config and run.json at the copy; returns the copy's config. Tests that change a run copy it."""
    tree = yaml.safe_load(cfg.read_text())
    src_out = Path(tree["train"]["output_dir"])
    src_db = Path(tree["tracking"]["tracking_uri"].removeprefix("sqlite:///"))
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_out, dst / name)
    shutil.copy2(src_db, dst / f"{name}.db")
    if (src_db.parent / "mlartifacts").is_dir() and not (dst / "mlartifacts").exists():
        shutil.copytree(src_db.parent / "mlartifacts", dst / "mlartifacts")
    uri = f"sqlite:///{dst / name}.db"
    tree["train"]["output_dir"], tree["tracking"]["tracking_uri"] = str(dst / name), uri
    record = json.loads((dst / name / "run.json").read_text())
    (dst / name / "run.json").write_text(json.dumps({**record, "tracking_uri": uri}))
    path = dst / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def metrics(out: Path) -> dict[int, dict]:
    """step -> every value logged for it, the last record's winning (a resumed run re-logs the steps after its
    checkpoint; the learning curve is a record of its own)."""
    steps: dict[int, dict] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        steps.setdefault(row["step"], {}).update(row)
    return steps


def latest(out: Path) -> str:
    """The tag the run's `checkpoints/latest` names ('' before the first checkpoint)."""
    marker = out / "checkpoints" / "latest"
    return marker.read_text().strip() if marker.is_file() else ""


def start(cmd: list[str], log: Path | None = None) -> subprocess.Popen:
    """Start `cmd` from the checkout in its own process group (so a signal can reach the launcher and its ranks),
    its output to `log` (or nowhere). Ctrl-C reaches it as from a terminal even when the suite runs as a background
    job: those start with SIGINT ignored, a child inherits an ignored signal, and Python then raises no
    KeyboardInterrupt."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, handler)
        if log:
            out.close()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll `predicate` until true; kill the job and fail if the process ends or time runs out first."""
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            kill_job(proc)
            raise AssertionError(f"condition not reached (exit code {proc.returncode})")
        time.sleep(0.1)


def final_weights(run_dir: Path) -> dict:
    """Every tensor of a run's final/ safetensors files, keyed `file/tensor` (for bitwise comparisons)."""
    from safetensors.torch import load_file

    files = sorted((run_dir / "final").glob("*.safetensors"))
    return {f"{p.name}/{k}": v for p in files for k, v in load_file(p).items()}
