"""The training run's MLflow record, in process (no DeepSpeed): where artifacts go, which run a restart continues,
how a changed config is recorded, and how a crash or an interrupt ends the run."""

import json

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.train.tracking import Tracker, fail_active_run


DB: list = []  # one SQLite store for the module (creating one costs seconds)


def _cfg(tmp_path, *extra):
    return load_config(None, [f"train.output_dir={tmp_path / 'run'}", f"tracking.tracking_uri=sqlite:///{DB[0]}",
                              "tracking.system_metrics=false", f"tracking.experiment={tmp_path.name}", *extra])


@pytest.fixture(scope="module", autouse=True)
def _store(tmp_path_factory):
    DB[:] = [tmp_path_factory.mktemp("db") / "mlruns.db"]


@pytest.fixture(autouse=True)
def _no_active_run():
    yield
    while mlflow.active_run():
        mlflow.end_run()


def test_artifacts_go_to_the_configured_location_never_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    t = Tracker(_cfg(tmp_path, f"tracking.artifact_location={tmp_path / 'arts'}"), {}, tmp_path / "run")
    t.finish(0)
    run = MlflowClient(_cfg(tmp_path).tracking.tracking_uri).get_run(t.run_id)
    assert run.info.artifact_uri.startswith((tmp_path / "arts").as_uri())
    assert (tmp_path / "arts").is_dir() and not (tmp_path / "mlruns").exists()
    t2 = Tracker(_cfg(tmp_path, "tracking.experiment=other"), {}, tmp_path / "run")  # default: beside the SQLite file
    t2.finish(0)
    run2 = MlflowClient(_cfg(tmp_path).tracking.tracking_uri).get_run(t2.run_id)
    assert run2.info.artifact_uri.startswith((DB[0].parent / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_resume_continues_and_records_a_changed_config(tmp_path):
    (tmp_path / "run").mkdir()
    first = Tracker(_cfg(tmp_path, "train.steps=10"), {}, tmp_path / "run")
    first.finish(4, status="KILLED")
    resumed = Tracker(_cfg(tmp_path, "train.steps=20", "train.lr=0.001"), {}, tmp_path / "run", resumed_step=4)
    resumed.finish(20)
    assert resumed.run_id == first.run_id
    client = MlflowClient(_cfg(tmp_path).tracking.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "10"
    assert run.data.tags["config_changed.step-4"] == "train.steps: 10 -> 20; train.lr: 0.0002 -> 0.001"
    names = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"resolved_config.yaml", "resolved_config-step-4.yaml"} <= names
    assert json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == 20


def test_start_without_checkpoint_is_a_fresh_run(tmp_path):
    (tmp_path / "run").mkdir()
    old = Tracker(_cfg(tmp_path, "loss.budgets=2d"), {}, tmp_path / "run")
    mlflow.end_run()  # as if killed outright: the store still says RUNNING...
    MlflowClient(_cfg(tmp_path).tracking.tracking_uri).update_run(old.run_id, status="RUNNING")
    new = Tracker(_cfg(tmp_path, "loss.budgets=full"), {}, tmp_path / "run", resumed_step=0)
    new.finish(1)
    client = MlflowClient(_cfg(tmp_path).tracking.tracking_uri)
    assert new.run_id != old.run_id and client.get_run(new.run_id).data.params["loss.budgets"] == "full"
    stale = client.get_run(old.run_id)
    assert stale.info.status == "KILLED" and stale.data.tags["superseded_by"] == new.run_id


@pytest.mark.parametrize("exc,status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_crash_ends_the_run_failed(tmp_path, exc, status):
    (tmp_path / "run").mkdir()
    t = Tracker(_cfg(tmp_path), {}, tmp_path / "run")
    fail_active_run(exc)
    assert mlflow.active_run() is None
    assert MlflowClient(_cfg(tmp_path).tracking.tracking_uri).get_run(t.run_id).info.status == status
    fail_active_run(exc)  # no active run: nothing to do
