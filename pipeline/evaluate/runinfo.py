"""Where an evaluation comes from and goes to: a stamp of the model files evaluated, and logging the grid's metrics
and report files to the training run (its run.json, read through pipeline.layout.run) in MLflow."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def model_stamp(model_dir: str | Path) -> str:
    """A short id of a saved model's files (names, sizes, modification times): results of another model (or of
    this directory after it was rewritten) carry another stamp."""
    parts = []
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file():
            st = f.stat()
            parts.append([f.name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def log_to_run(results: dict, files: list[Path], run: dict, artifact_dir: str = "eval") -> None:
    """Log every budget's metrics (keys like `eval.L4-d128-p1.ndcg_at_5`) and the report files to the MLflow run
    of `run` (a run.json dict); the run may be finished (it is not reopened, only written to)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=run["tracking_uri"])
    run_id = run["mlflow_run_id"]
    metrics = []
    for row in results["rows"]:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k not in ("layers", "dim", "pool"):
                metrics.append(Metric(f"eval.{row['budget']}.{k}", float(v), 0, int(run.get("steps") or 0)))
    for start in range(0, len(metrics), 500):  # the REST API takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[start : start + 500])
    client.set_tag(run_id, "eval_fingerprint", results["eval_fingerprint"])
    client.set_tag(run_id, "eval_set", results["eval_set"])
    for f in files:
        client.log_artifact(run_id, str(f), artifact_dir)
    log.info("logged %d metrics and %d files to run %s", len(metrics), len(files), run_id)
