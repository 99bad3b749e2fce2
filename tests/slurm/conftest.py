"""Fixtures for the Slurm tests: one real 8-node Slurm cluster on this machine per session, stopped by PID."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers.slurm_cluster import LocalSlurm, ensure_installed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def slurm_cluster():
    """8 emulated nodes n1..n8 on 127.0.0.1 (Debian's Slurm, installed by apt-get when missing)."""
    reason = ensure_installed()
    if reason:
        pytest.skip(f"no Slurm cluster: {reason}")
    # Short path: munge's unix socket lives under it.
    state = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    cluster = LocalSlurm(state, nodes=8, base_port=int(os.environ.get("SLURM_TEST_BASE_PORT", "17000")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if not os.environ.get("SLURM_TEST_KEEP"):  # set it to keep slurm.conf and the daemons' logs
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def job_env(tmp_path):
    """The environment a test job is submitted with: CPU nodes, one process per node, logs under tmp_path."""
    return {
        "GPUS_PER_NODE": "0",
        "LOG_DIR": str(tmp_path / "logs"),
        "WORKDIR": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
