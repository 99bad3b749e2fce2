"""The serving tests' one model server: `python -m pipeline.serve http` (MLflow's scoring app behind our request
guard) serving the chain's `half` variant under the alias `http`, started once per session and stopped by PID.
Every test that talks to it is in the xdist group `model-server`, so one worker runs them all."""

import sys

import pytest
from mlflow import MlflowClient

from tests.helpers.chain import NAME
from tests.helpers.servers import free_port, process

ALIAS = "http"
LIMITS = {"max_rows": 4, "max_request_mb": 0.25}


@pytest.fixture(scope="session")
def model_server(tmp_path_factory, chain):
    """(port, retriever of the served variant): the server answers /invocations on 127.0.0.1:port."""
    from pipeline.export.variants import load_variant
    from pipeline.registry.promotion import promote

    cfg = chain.config()
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    promote(client, NAME, ALIAS, 0.0, version=chain.registered()["half"]["registered"]["version"])
    port = free_port()
    cmd = [sys.executable, "-m", "pipeline.serve", "http", "--tracking-uri", cfg.tracking.tracking_uri, "--model",
           NAME, "--alias", ALIAS, "--port", str(port), *(f"serve.{k}={v}" for k, v in LIMITS.items())]
    with process(cmd, f"http://127.0.0.1:{port}/ping", tmp_path_factory.mktemp("serve") / "serve.log", timeout=180):
        yield port, load_variant(chain.exported()["half"][0])[0]
