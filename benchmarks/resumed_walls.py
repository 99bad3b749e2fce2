"""The training time a resumed run's wall.json cannot hold: the segments killed before the last start, read back from
the MLflow run's `loss` records (one per train.log_every steps, each with its wall-clock timestamp).

wall.json's `train_s` is the last start's wall time only (a killed stage records nothing). The training loop resumes
the same MLflow run, so its records hold every start: those logged before the last start (its run's end minus
`train_s`) belong to killed segments. A new segment begins where the step does not increase; the first one is
counted from the run's start, a later one from its first record, each to its last record: a lower bound (the start-up
before the first record of a later segment, and the work after the last record before the kill, are not known).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from pipeline.layout.run import RunPaths

log = logging.getLogger("experiment")
LOSS = "loss"


def killed_s(records: list[tuple[int, int]], start_ms: int, end_ms: int, last_s: float) -> float:
    """Seconds of training in the segments before the last start. records: (step, timestamp ms) of the run's loss;
    start_ms/end_ms: the MLflow run's start and end; last_s: wall.json's train_s (the last start's wall time)."""
    boundary = end_ms - last_s * 1000.0  # at or before the last start: the stage ends after the run does
    earlier = sorted((t, step) for step, t in records if t < boundary)
    total, seg_start, prev = 0.0, start_ms, None
    for t, step in earlier:
        if prev is not None and step <= prev[1]:  # a restart: the previous segment ended at its last record
            total += prev[0] - seg_start
            seg_start = t
        prev = (t, step)
    if prev is not None:
        total += prev[0] - seg_start
    return total / 1000.0


def resumed_train_s(run_dir: Path, last_s: float) -> float | None:
    """killed_s() for a run directory, through its run.json's MLflow run; None (with a warning) when the tracking
    store or the run cannot be read, so the caller can tell a partial wall time from a whole one."""
    run = RunPaths(run_dir).read_run_json()
    if run is None:
        log.warning("%s has no run.json: its wall time counts the last start only", run_dir.name)
        return None
    uri = run["tracking_uri"]
    parsed = urlparse(uri)  # sqlite:///relative.db or sqlite:////absolute.db: the path after the third slash
    if parsed.scheme == "sqlite" and not Path(parsed.path[1:]).is_file():
        log.warning("%s: tracking store %s is gone: its wall time counts the last start only", run_dir.name, uri)
        return None  # opening a missing SQLite store would create an empty one
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient(tracking_uri=uri)
        info = client.get_run(run["mlflow_run_id"]).info
        records = [(m.step, m.timestamp) for m in client.get_metric_history(info.run_id, LOSS)]
    except MlflowException as err:
        log.warning("%s: MLflow run %s unreadable (%s): its wall time counts the last start only", run_dir.name,
                    run["mlflow_run_id"], str(err).splitlines()[0])
        return None
    end_ms = info.end_time or max((t for _, t in records), default=info.start_time)
    return killed_s(records, info.start_time, end_ms, last_s)
