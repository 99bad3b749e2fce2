"""slurm/train_8node.sh on the real 8-node Slurm cluster with a stand-in entry point, on 3 of its nodes (the shipped
8-node request is tested with real training in test_train_slurm.py): one world, USR1 -> requeue."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.slurm_jobs import FINAL, batch_log, node_logs, read_jsonl, submit
from tests.slurm.standin import next_value

pytestmark = pytest.mark.slurm
NODES = 3


def _assert_one_world(out, job, tmp_path) -> None:
    """One launcher per node, NODES ranks in one gloo world; rank r runs on node n(r+1); logs per node."""
    ranks = [json.loads((out / "attempt0" / f"rank{r}.json").read_text()) for r in range(NODES)]
    assert [r["rank"] for r in ranks] == list(range(NODES))
    assert {r["world"] for r in ranks} == {NODES}
    assert {r["sum"] for r in ranks} == {sum(range(1, NODES + 1))}  # the all-reduce saw every rank
    assert [r["node"] for r in ranks] == [f"n{k}" for k in range(1, NODES + 1)]  # one rank per node, in order
    assert [r["node_id"] for r in ranks] == list(range(NODES))
    assert len({r["master"] for r in ranks}) == 1 and ranks[0]["master"].startswith("127.0.0.1:")
    assert len(list((tmp_path / "logs").glob(f"*-{job}-r0-node*.log"))) == NODES


def test_one_world_then_usr1_requeue_resumes(slurm_cluster, tmp_path, job_env):
    """NODES ranks on NODES nodes form one world; then USR1 to the batch shell part-way: every rank stops at one step,
    checkpoints, the job requeues itself and the second run finishes from the checkpoint: each step exactly once, values equal an unbroken run."""
    out, steps = tmp_path / "out", 12
    env = {**job_env, "ENTRY": "tests.slurm.standin", "CONFIG": "configs/tiny.yaml",
           "OVERRIDES": f"out={out} steps={steps} step_s=0.2"}
    job = submit(slurm_cluster, tmp_path, env, f"--nodes={NODES}")
    deadline = time.time() + 120
    while len(read_jsonl(out / "trajectory.jsonl")) < 3:
        assert time.time() < deadline, batch_log(tmp_path, job) + node_logs(tmp_path)
        assert slurm_cluster.job(job).get("JobState") in {"PENDING", "RUNNING"}, batch_log(tmp_path, job)
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", str(job))  # what --signal=B:USR1@120 sends
    slurm_cluster.release_requeued(job)
    info = slurm_cluster.wait_job(job, FINAL, timeout=180, restarts=1)
    log = batch_log(tmp_path, job)
    assert info["JobState"] == "COMPLETED", log + node_logs(tmp_path)
    assert info["Restarts"] == "1"
    _assert_one_world(out, job, tmp_path)
    traj = read_jsonl(out / "trajectory.jsonl")
    assert [t["step"] for t in traj] == list(range(steps))
    value, expected = 1, []
    for s in range(steps):
        value = next_value(value, s)
        expected.append(value)
    assert [t["value"] for t in traj] == expected
    attempts = [t["attempt"] for t in traj]
    cut = attempts.index(1)
    assert 3 <= cut < steps and set(attempts[:cut]) == {0} and set(attempts[cut:]) == {1}
    assert len(list((out / "attempt1").glob("rank*.json"))) == NODES  # the requeued run formed the world again
    assert "got SIGUSR1" in log and "requeueing" in log and "attempt 1]" in log
    # Every node's launcher reported the checkpointed stop as success (no --kill-on-bad-exit teardown).
    assert "training step ended with status 0" in log.split("requeueing")[0], log
    assert "srun: error" not in log, log
    assert json.loads((out / "done.json").read_text())["attempt"] == 1
