"""`sbatch slurm/train_8node.sh` running the real `python -m pipeline.train`: 8 ranks on 8 nodes under ZeRO-3 on CPU
(the script as shipped); then, on 2 of the nodes, a USR1 part-way: checkpoint, requeue, resume in the same MLflow run
with an uninterrupted 2-node run's losses, gradient norms and final weights, bitwise (bitwise needs the same world;
2 nodes keep every step of the mechanism at a quarter of the processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.slurm_jobs import FINAL, batch_log, node_logs, read_jsonl, submit
from tests.helpers.training import final_weights

pytestmark = pytest.mark.slurm
STEPS = 4  # USR1 after step 1; the stop is agreed in a later step's flags all-reduce


def _overrides(model: Path, shards: Path, out: Path) -> str:
    """A tiny run: global batch 8 (one pair per rank on 8 nodes), loss logged every step, a checkpoint every 2."""
    return " ".join([
        f"model.name_or_path={model}", f"data.shards={shards}", f"train.output_dir={out / 'run'}",
        f"tracking.tracking_uri=sqlite:///{out / 'mlruns.db'}", "tracking.system_metrics=false",
        f"train.steps={STEPS}", "train.log_every=1", "train.checkpoint_every=2", "train.warmup_steps=1",
        "data.global_batch=8", "train.chunk_size=1", "train.eval_every=0"])  # the shards hold no eval split


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from tests.helpers.shards import write_shards

    return write_shards(tmp_path_factory.mktemp("slurm-shards"), n_pages=64, shard_size=8)


def _submit_training(cluster, model: Path, shards: Path, out: Path, *options: str) -> int:
    env = {"GPUS_PER_NODE": "0", "LOG_DIR": str(out / "logs"), "OMP_NUM_THREADS": "1", "CONFIG": "configs/tiny.yaml",
           "OVERRIDES": _overrides(model, shards, out)}
    return submit(cluster, out, env, *options)


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, tiny_qwen2vl_dir, shards, tmp_path_factory):
    """One unmodified `sbatch slurm/train_8node.sh` of the tiny recipe (8 nodes), run to the end."""
    out = tmp_path_factory.mktemp("slurm-train")
    job = _submit_training(slurm_cluster, tiny_qwen2vl_dir, shards, out)
    return job, slurm_cluster.wait_job(job, FINAL, timeout=420), out


@pytest.fixture(scope="module")
def uninterrupted_two_nodes(slurm_cluster, tiny_qwen2vl_dir, shards, tmp_path_factory):
    """The same job on 2 nodes, run to the end: the reference of the USR1 test."""
    out = tmp_path_factory.mktemp("slurm-train-2")
    job = _submit_training(slurm_cluster, tiny_qwen2vl_dir, shards, out, "--nodes=2")
    return job, slurm_cluster.wait_job(job, FINAL, timeout=420), out


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in read_jsonl(out / "run" / "metrics.jsonl")]


def _mlflow_loss(out: Path) -> tuple[str, list[tuple[int, float]], str]:
    from mlflow import MlflowClient

    run = json.loads((out / "run" / "run.json").read_text())
    client = MlflowClient(tracking_uri=run["tracking_uri"])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run["mlflow_run_id"], "loss"))
    return run["mlflow_run_id"], history, client.get_run(run["mlflow_run_id"]).info.status


def test_eight_nodes_train_under_zero3(uninterrupted):
    """All 8 ranks joined one world (each saved its own ZeRO-3 partition), the loss reached MLflow, checkpoints
    and the consolidated final weights exist."""
    job, info, out = uninterrupted
    assert info["JobState"] == "COMPLETED", batch_log(out, job) + node_logs(out)
    rank0 = (out / "logs").glob(f"*-{job}-r0-node0.log")
    assert "process group: 8 ranks via torchrun" in next(rank0).read_text()
    ckpts = sorted(p.name for p in (out / "run" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-00000002", f"step-{STEPS:08d}"]
    for ckpt in ckpts:
        parts = sorted((out / "run" / "checkpoints" / ckpt).glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
        assert [p.name.split("_")[3] for p in parts] == [str(r) for r in range(8)]
    run_id, history, status = _mlflow_loss(out)
    assert [s for s, _ in history] == list(range(1, STEPS + 1)) and status == "FINISHED"
    assert [v for _, v in history] == pytest.approx([v for _, v in _losses(out)])
    assert (out / "run" / "final").is_dir() and any((out / "run" / "final").glob("*.safetensors"))
    assert len(list((out / "logs").glob(f"*-{job}-r0-node*.log"))) == 8


def test_usr1_resumes_with_the_uninterrupted_losses(slurm_cluster, uninterrupted_two_nodes, tiny_qwen2vl_dir,
                                                    shards, tmp_path):
    """USR1 to the batch shell after step 1 (2 nodes): checkpoint, requeue, resume; same MLflow run, the same loss
    per step, gradient norms and final weights as the uninterrupted 2-node run."""
    ref_job, ref_info, ref_out = uninterrupted_two_nodes
    assert ref_info["JobState"] == "COMPLETED", batch_log(ref_out, ref_job) + node_logs(ref_out)
    ref_log = next((ref_out / "logs").glob(f"*-{ref_job}-r0-node0.log")).read_text()
    assert "process group: 2 ranks via torchrun" in ref_log
    job = _submit_training(slurm_cluster, tiny_qwen2vl_dir, shards, tmp_path, "--nodes=2")
    deadline = time.time() + 300
    while not _losses(tmp_path):
        assert time.time() < deadline and slurm_cluster.job(job).get("JobState") in {"PENDING", "RUNNING"}, \
            batch_log(tmp_path, job) + node_logs(tmp_path)
        time.sleep(0.5)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", str(job))
    slurm_cluster.release_requeued(job, timeout=180)
    first_run_id = json.loads((tmp_path / "run" / "run.json").read_text())["mlflow_run_id"]
    stopped_at = len(_losses(tmp_path))
    info = slurm_cluster.wait_job(job, FINAL, timeout=300, restarts=1)
    log = batch_log(tmp_path, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", \
        f"{info}\n{slurm_cluster.job_events(job)}\n{log}\n{node_logs(tmp_path)}"
    assert "got SIGUSR1" in log and "requeueing" in log and "attempt 1]" in log
    assert 1 <= stopped_at < STEPS  # the first attempt stopped part-way ...
    resumed = next((tmp_path / "logs").glob(f"*-{job}-r1-node0.log")).read_text()
    assert f"(step {stopped_at})" in resumed.split("resumed from", 1)[1].splitlines()[0]  # ... from its checkpoint
    assert f"continuing MLflow run {first_run_id}" in resumed
    run_id, history, status = _mlflow_loss(tmp_path)
    assert run_id == first_run_id and status == "FINISHED"
    assert [s for s, _ in history] == list(range(1, STEPS + 1))  # every step logged once, none repeated
    assert [s for s, _ in _losses(tmp_path)] == list(range(1, STEPS + 1))
    assert [v for _, v in history] == [v for _, v in _losses(ref_out)]  # the uninterrupted trajectory, bitwise
    norms = [m["grad_norm"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert norms == [m["grad_norm"] for m in read_jsonl(ref_out / "run" / "metrics.jsonl")]
    ref_weights, weights = final_weights(ref_out / "run"), final_weights(tmp_path / "run")
    assert ref_weights.keys() == weights.keys() and any("visual" in k for k in weights)
    assert [k for k in weights if not torch.equal(weights[k], ref_weights[k])] == []  # the same final weights
