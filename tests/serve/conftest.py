"""The serving tests' one model server: `python -m pipeline.serve http` (MLflow's scoring app and /search behind our
request guard) serving the chain's `half` variant under the alias `http`, its pages indexed in Qdrant Edge first
(budgets and cascade in SERVE), started once per session and stopped by PID. Every test that talks to it is in the
xdist group `model-server`, so one worker runs them all."""

import sys

import pytest
from mlflow import MlflowClient

from tests.helpers.chain import NAME
from tests.helpers.servers import free_port, process
from tests.helpers.serving import ALIAS, LIMITS, SERVE



@pytest.fixture(scope="session")
def model_server(tmp_path_factory, chain):
    """(port, retriever of the served variant, the server's config, the same pages in a flat index's config):
    /invocations and /search on 127.0.0.1:port."""
    from pipeline.export.variants import load_variant
    from pipeline.registry.promotion import promote
    from pipeline.serve.__main__ import main as serve_main

    cfg = chain.config()
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    promote(client, NAME, ALIAS, 0.0, version=chain.registered()["half"]["registered"]["version"])
    index_dir = tmp_path_factory.mktemp("http-index")
    common = ["--tracking-uri", cfg.tracking.tracking_uri, "--model", NAME, "--alias", ALIAS, "--index-dir",
              str(index_dir), *SERVE]
    assert serve_main(["index", *common, "--shards", str(chain.shards), "--split", "train"]) == 0
    flat_dir = tmp_path_factory.mktemp("http-flat")  # the oracle: the same pages, budgets and cascade, exact
    assert serve_main(["index", *common, "--index-dir", str(flat_dir), "--engine", "flat", "--shards",
                       str(chain.shards), "--split", "train"]) == 0
    port = free_port()
    cmd = [sys.executable, "-m", "pipeline.serve", "http", *common, "--port", str(port),
           *(f"serve.{k}={v}" for k, v in LIMITS.items())]
    # As from a shell: only the config names the tracking store (the in-process `index` above set this process's
    # MLFLOW_TRACKING_URI, which hid a server that resolved its alias in MLflow's default store instead).
    with process(cmd, f"http://127.0.0.1:{port}/ping", tmp_path_factory.mktemp("serve") / "serve.log", timeout=180,
                 env={"MLFLOW_TRACKING_URI": None}):
        yield (port, load_variant(chain.exported()["half"][0])[0],
               chain.config(f"serve.index_dir={index_dir}", f"serve.alias={ALIAS}", *SERVE),
               chain.config(f"serve.index_dir={flat_dir}", f"serve.alias={ALIAS}", "serve.engine=flat", *SERVE))
