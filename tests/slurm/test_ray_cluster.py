"""slurm/ray_cluster.sh on the local Slurm cluster: a 2-node Ray cluster that `ray job submit` runs tasks on."""

from __future__ import annotations

import json
import socket

import pytest

from tests.helpers.slurm_jobs import FINAL, ROOT, batch_log, node_logs

pytestmark = pytest.mark.slurm


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_ray_cluster_spans_the_allocation(slurm_cluster, tmp_path, job_env):
    """Head on the first node, a worker on the second; a submitted job sees both and runs a task on each."""
    gcs, dash, client, *agent = _free_ports(7)
    out = tmp_path / "probe.json"
    env = {**job_env, "RAY_PORT": str(gcs), "DASHBOARD_PORT": str(dash), "NUM_CPUS": "1", "START_TIMEOUT": "60",
           "RAY_TMP": f"/tmp/rs{gcs}",
           # Two Ray nodes share this one machine: give each its own agent/metrics ports.
           "HEAD_ARGS": f"--ray-client-server-port={client} --dashboard-agent-listen-port={agent[0]} "
                        f"--metrics-export-port={agent[1]}",
           "WORKER_ARGS": f"--dashboard-agent-listen-port={agent[2]} --metrics-export-port={agent[3]}",
           "COMMAND": f"ray job submit -- {ROOT}/.venv/bin/python {ROOT}/tests/slurm/ray_probe.py {out}"}
    job = slurm_cluster.sbatch(ROOT / "slurm" / "ray_cluster.sh", "--nodes=2", f"--output={tmp_path}/%x-%j.out",
                               env=env, cwd=ROOT)
    info = slurm_cluster.wait_job(job, FINAL, timeout=180)
    log = batch_log(tmp_path, job)
    assert info["JobState"] == "COMPLETED", log + node_logs(tmp_path)
    probe = json.loads(out.read_text())
    assert len(probe["nodes"]) == 2 and sorted(probe["ran_on"]) == sorted(probe["nodes"])
    assert probe["cpus"] == 2.0  # NUM_CPUS=1 on each of the two nodes
    address = (tmp_path / "logs" / f"ray-{job}.address").read_text().strip()
    assert address == f"RAY_ADDRESS=http://127.0.0.1:{dash}"
    assert "Ray cluster up: 2 nodes" in log and "stopping Ray" in log
