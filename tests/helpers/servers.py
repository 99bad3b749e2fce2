"""Real MLflow processes for tests: a tracking server and a model server, each started here and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from pipeline.procs import free_port


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this test started (the server and its uvicorn workers), by its PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def process(cmd: list[str], health_url: str, log: Path, timeout: float = 90, env: dict | None = None):
    """Run `cmd` in its own session, wait for `health_url` to answer 200, yield the Popen, stop it by PID. `env`:
    variables set on top of this process's (None: unset)."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    try:
        _wait_http(health_url, proc, log, timeout)
        yield proc
    finally:
        _stop(proc)


@contextlib.contextmanager
def tracking_server(workdir: Path):
    """`mlflow server` on 127.0.0.1 with a SQLite store under `workdir`; yields its http:// URI."""
    port = free_port()
    cmd = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
           "--artifacts-destination", str(workdir / "server-artifacts")]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with process(cmd, f"http://127.0.0.1:{port}/health", workdir / "server.log", env=env):
        yield f"http://127.0.0.1:{port}"
