"""The registry tests' one MLflow tracking server (`mlflow server` on 127.0.0.1, SQLite store), started once per
session and stopped by PID; the tests that use it are in the xdist group `mlflow-server` and each registers models
under names of its own."""

import pytest

from tests.helpers.servers import tracking_server


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    with tracking_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri
