"""MLflow tracking for a training run: one run per training, continued (same run id) when the run resumes.

Only rank 0 talks to MLflow; other ranks get a tracker that does nothing. The run id lives in
`<output_dir>/run.json` ({"mlflow_run_id", "tracking_uri", "experiment", "steps"}), written as soon as the run
starts so that a killed run resumes into the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from pipeline.config import Config, flatten, save_config, to_dict
from pipeline.train import dist

log = logging.getLogger(__name__)


def _prepare_uri(uri: str) -> str:
    """Create the parent directory of a local SQLite store or file store."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _param_key(k: str) -> str:
    """MLflow names allow alphanumerics and _ - . space : / only (config dict keys may hold others, e.g. '+')."""
    return re.sub(r"[^\w\-. :/]", "_", k)


def _param_value(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text[:6000]


class Tracker:
    """Log params, artifacts and metrics of one training to MLflow (a no-op on ranks other than 0)."""

    def __init__(self, cfg: Config, ds_config: dict, output_dir: str | Path):
        self.active = dist.is_rank0()
        self.output_dir = Path(output_dir)
        self.run_json = self.output_dir / "run.json"
        self.cfg = cfg
        self.run_id: str | None = None
        if self.active:
            self._start(ds_config)

    def _start(self, ds_config: dict) -> None:
        import mlflow

        t = self.cfg.tracking
        mlflow.set_tracking_uri(_prepare_uri(t.tracking_uri))
        mlflow.set_experiment(t.experiment)
        previous = json.loads(self.run_json.read_text()) if self.run_json.is_file() else {}
        resume_id = previous.get("mlflow_run_id") if previous.get("tracking_uri") == t.tracking_uri else None
        run = mlflow.start_run(run_id=resume_id, run_name=None if resume_id else t.run_name,
                               log_system_metrics=t.system_metrics)
        self.run_id = run.info.run_id
        self.write_run_json(previous.get("steps", 0))
        if resume_id:
            log.info("continuing MLflow run %s", self.run_id)
            return
        params = {_param_key(k): _param_value(v) for k, v in flatten(to_dict(self.cfg)).items()}
        mlflow.log_params(params)
        mlflow.set_tags({"world_size": dist.world_size(), "zero_stage": ds_config.get("zero_optimization", {}).get("stage")})
        save_config(self.cfg, self.output_dir / "resolved_config.yaml")
        (self.output_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
        mlflow.log_artifact(str(self.output_dir / "resolved_config.yaml"))
        mlflow.log_artifact(str(self.output_dir / "deepspeed_config.json"))
        log.info("MLflow run %s in %s", self.run_id, t.tracking_uri)

    def write_run_json(self, steps: int) -> None:
        if not self.active:
            return
        t = self.cfg.tracking
        data = {"mlflow_run_id": self.run_id, "tracking_uri": t.tracking_uri, "experiment": t.experiment,
                "steps": steps}
        tmp = self.run_json.with_name("run.json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.run_json)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            import mlflow

            mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if self.active:
            import mlflow

            mlflow.log_artifact(str(path))

    def finish(self, steps: int, status: str = "FINISHED") -> None:
        """Record the step count in run.json and close the run (status KILLED when preempted)."""
        if self.active:
            import mlflow

            self.write_run_json(steps)
            mlflow.end_run(status=status)
