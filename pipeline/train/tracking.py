"""MLflow tracking for a training run: one run per training, continued (same run id) when a checkpoint resumes.

Only rank 0 talks to MLflow; other ranks get a tracker that does nothing. The run id lives in
`<output_dir>/run.json` ({"mlflow_run_id", "tracking_uri", "experiment", "steps"}), written as soon as the run
starts. A run that resumes from a checkpoint continues its MLflow run and records any config change (a tag per
resume, the new resolved config as an artifact); a start without a checkpoint opens a fresh run, so a run that
failed on a bad config is never continued under its old params. Artifacts go to the experiment's artifact root
beside the tracking store (`pipeline.tracking_store`). A run ends FINISHED, KILLED (preempted, interrupted) or
FAILED (an exception).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from pipeline.configlib import flatten, save_config, to_dict
from pipeline.layout.run import RunPaths
from pipeline.tracking_store import ensure_experiment, prepare_uri
from pipeline.train import dist
from pipeline.train.config import TrainingTree

log = logging.getLogger(__name__)


def _param_key(k: str) -> str:
    """MLflow names allow alphanumerics and _ - . space : / only (config dict keys may hold others, e.g. '+')."""
    return re.sub(r"[^\w\-. :/]", "_", k)


def _param_value(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text[:6000]


def config_params(cfg: TrainingTree) -> dict[str, str]:
    """The config as MLflow params: dotted keys, text values."""
    return {_param_key(k): _param_value(v) for k, v in flatten(to_dict(cfg)).items()}


def fail_active_run(exc: BaseException | None = None) -> None:
    """End this process's active MLflow run as FAILED (KILLED for an interrupt); no-op without one."""
    if "mlflow" not in sys.modules:
        return
    import mlflow

    if mlflow.active_run() is not None:
        interrupted = isinstance(exc, KeyboardInterrupt)
        mlflow.end_run(status="KILLED" if interrupted else "FAILED")


class Tracker:
    """Log params, artifacts and metrics of one training to MLflow (a no-op on ranks other than 0)."""

    def __init__(self, cfg: TrainingTree, ds_config: dict, output_dir: str | Path, resumed_step: int = 0):
        self.active = dist.is_rank0()
        self.output_dir = Path(output_dir)
        self.paths = RunPaths(self.output_dir)
        self.run_json = self.paths.run_json
        self.cfg = cfg
        self.run_id: str | None = None
        if self.active:
            self._start(ds_config, resumed_step)

    def _start(self, ds_config: dict, resumed_step: int) -> None:
        import mlflow
        from mlflow import MlflowClient

        t = self.cfg.tracking
        mlflow.set_tracking_uri(prepare_uri(t.tracking_uri))
        client = MlflowClient(tracking_uri=t.tracking_uri)
        experiment_id = ensure_experiment(client, t)
        previous = json.loads(self.run_json.read_text()) if self.run_json.is_file() else {}
        old_id = previous.get("mlflow_run_id") if previous.get("tracking_uri") == t.tracking_uri else None
        old = _find_run(client, old_id)
        if old is not None and resumed_step > 0:
            run = mlflow.start_run(run_id=old.info.run_id, log_system_metrics=t.system_metrics)
            self.run_id = run.info.run_id
            self.write_run_json(resumed_step)
            self._record_changes(old.data.params, resumed_step)
            log.info("continuing MLflow run %s from step %d", self.run_id, resumed_step)
            return
        run = mlflow.start_run(experiment_id=experiment_id, run_name=t.run_name, log_system_metrics=t.system_metrics)
        self.run_id = run.info.run_id
        self.write_run_json(0)
        if old is not None and old.info.status == "RUNNING":  # killed outright: nothing will ever end it
            client.set_terminated(old.info.run_id, status="KILLED")
        if old is not None:
            client.set_tag(old.info.run_id, "superseded_by", self.run_id)
            log.info("no checkpoint to resume: MLflow run %s starts fresh (previous run %s)", self.run_id,
                     old.info.run_id)
        mlflow.log_params(config_params(self.cfg))
        mlflow.set_tags({"world_size": dist.world_size(),
                         "zero_stage": ds_config.get("zero_optimization", {}).get("stage")})
        self._log_config("resolved_config.yaml")
        (self.output_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
        mlflow.log_artifact(str(self.output_dir / "deepspeed_config.json"))
        log.info("MLflow run %s in %s", self.run_id, t.tracking_uri)

    def _log_config(self, name: str) -> None:
        import mlflow

        save_config(self.cfg, self.paths.resolved_config)
        mlflow.log_text(self.paths.resolved_config.read_text(), name)

    def _record_changes(self, logged: dict[str, str], step: int) -> None:
        """A resumed run whose config differs from its logged params: a tag listing the changes and the new
        resolved config as an artifact (MLflow params cannot change)."""
        import mlflow

        changes = [f"{k}: {logged.get(k)} -> {v}" for k, v in config_params(self.cfg).items() if logged.get(k) != v]
        if not changes:
            return
        mlflow.set_tag(f"config_changed.step-{step}", "; ".join(changes)[:5000])
        self._log_config(f"resolved_config-step-{step}.yaml")
        log.warning("resumed with a changed config (recorded on the run): %s", "; ".join(changes)[:500])

    def write_run_json(self, steps: int) -> None:
        if not self.active:
            return
        t = self.cfg.tracking
        data = {"mlflow_run_id": self.run_id, "tracking_uri": t.tracking_uri, "experiment": t.experiment,
                "steps": steps}
        self.paths.write_run_json(data)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            import mlflow

            mlflow.log_metrics(metrics, step=step)

    def finish(self, steps: int, status: str = "FINISHED") -> None:
        """Record the step count in run.json and close the run (status KILLED when preempted)."""
        if self.active:
            import mlflow

            self.write_run_json(steps)
            mlflow.end_run(status=status)


def _find_run(client, run_id: str | None):
    """The MLflow run `run_id` when this store still has it (not deleted), else None."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # another store, or a deleted run
        return None
    return run if run.info.lifecycle_stage == "active" else None
