"""What a training run's directory and its MLflow run hold right now (for tests that check a job touched nothing)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.layout.lock import LOCK_NAME


def run_files(out: Path) -> dict[str, int]:
    """mtime of every file under a run directory except the lock (a starting job writes its name there)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.name != LOCK_NAME}


def mlflow_run(out: Path):
    """The MLflow run that `out/run.json` names."""
    from mlflow import MlflowClient

    record = json.loads((out / "run.json").read_text())
    return MlflowClient(record["tracking_uri"]).get_run(record["mlflow_run_id"])
