"""Where MLflow keeps a run's files: the configured experiment, created with an artifact root beside the tracking
store (never the current directory), shared by training runs and registered variants; a new local SQLite store's
schema set up by one process at a time."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.layout.lock import serialised

log = logging.getLogger(__name__)
_READY: set[str] = set()  # SQLite stores this process has seen set up


def prepare_uri(uri: str) -> str:
    """Create the parent directory of a local SQLite store and make sure its schema exists, under a flock on
    `<file>.lock` beside it: MLflow's first-time set-up of a new SQLite file fails ("table already exists", a
    locked database) in all but one of several processes that run it at once."""
    if uri.startswith("sqlite:///") and uri not in _READY:
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient

        with serialised(db.with_name(db.name + ".lock")):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # creates or migrates the tracking and registry tables
            client.search_registered_models(max_results=1)
        _READY.add(uri)
    return uri


def artifact_root(tracking) -> str | None:
    """The artifact location for a new experiment: tracking.artifact_location (made absolute), `mlartifacts/`
    next to a SQLite file, else None (a server or file store uses its own root)."""
    if tracking.artifact_location:
        loc = tracking.artifact_location
        return loc if "://" in loc or loc.startswith("file:") else Path(loc).expanduser().resolve().as_uri()
    if tracking.tracking_uri.startswith("sqlite:///"):
        db = Path(tracking.tracking_uri[len("sqlite:///"):]).expanduser().resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(client, tracking) -> str:
    """The id of tracking.experiment, created with `artifact_root(tracking)` when missing."""
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(tracking.experiment, artifact_location=artifact_root(tracking))
    except MlflowException:  # created meanwhile by a concurrent process
        exp = client.get_experiment_by_name(tracking.experiment)
        if exp is None:
            raise
        return exp.experiment_id
