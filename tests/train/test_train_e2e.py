"""End to end through `python -m pipeline.train` on synthetic shards and the tiny Qwen2-VL retriever: a short run
lowers the loss and fills one MLflow run (continued after SIGUSR1 preemption); kill -9 then resume on 2 ranks
gives the uninterrupted run's loss at every later step (the killed run's output-directory lock died with it);
final/ holds the consolidated ZeRO-3 weights."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.layout.lock import LOCK_NAME
from tests.data.synthetic import write_shards
from tests.train.launch import ROOT, final_weights, run, torchrun_cmd

ENV = {"PYTHONPATH": str(ROOT)}


def write_config(tmp: Path, name: str, model_dir: Path, shards: Path, **train) -> Path:
    cfg = {
        "model": {"name_or_path": str(model_dir), "dim": 32, "exits": [2, 4], "widths": [32, 8], "pools": [1, 2]},
        "loss": {"temperature": 0.05},
        "data": {"shards": str(shards), "global_batch": 8, "chunk_size": 4},
        "train": {"output_dir": str(tmp / name), "lr": 3e-3, "warmup_steps": 3, "log_every": 1, **train},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / name}.db", "experiment": "test"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def metrics(out: Path) -> dict[int, dict]:
    """step -> the last record logged for it (a resumed run re-logs the steps after its checkpoint)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"condition not reached (exit code {proc.returncode})")
        time.sleep(0.2)


def latest(out: Path) -> str:
    marker = out / "checkpoints" / "latest"
    return marker.read_text().strip() if marker.is_file() else ""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    return write_shards(base / "small", n_pages=8, shard_size=8), write_shards(base / "big", n_pages=48)


def test_short_run_learns_tracks_and_survives_sigusr1(tmp_path, tiny_qwen2vl_dir, shards):
    cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, shards[0], steps=12, checkpoint_every=100)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.train", "--config", str(cfg)]
    proc = start(cmd)
    wait_for(lambda: (out / "metrics.jsonl").is_file() and max(metrics(out)) >= 4, proc)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == 143  # checkpoint saved at the next step boundary, then the preempted code
    stopped_at = int(latest(out).split("-")[1])
    assert stopped_at >= 4
    first_id = json.loads((out / "run.json").read_text())["mlflow_run_id"]
    done = run(cmd, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["mlflow_run_id"] == first_id and record["steps"] == 12

    losses = [metrics(out)[s]["loss"] for s in range(1, 13)]
    assert sum(losses[6:]) / 6 < 0.8 * math.log(8), losses  # well below chance (ln 8) on 8 pages

    from mlflow.tracking import MlflowClient

    client = MlflowClient(record["tracking_uri"])
    mrun = client.get_run(first_id)
    assert mrun.info.status == "FINISHED"
    budgets = [k for k in mrun.data.metrics if k.startswith("loss/")]
    assert len(budgets) == 8 and "loss/L4-d32-p1" in budgets and "loss/L2-d8-p2" in budgets
    for key in ("loss/L2-d8-p2", "lr", "samples_per_s", "grad_norm", "skipped_steps"):
        steps = {m.step for m in client.get_metric_history(first_id, key)}
        assert set(range(1, 13)) <= steps, key  # one history across the preemption
    assert mrun.data.params["data.global_batch"] == "8"
    assert {a.path for a in client.list_artifacts(first_id)} >= {"resolved_config.yaml", "deepspeed_config.json"}
    assert (out / "resolved_config.yaml").is_file()
    check_final_weights(out, "step-00000012")


def check_final_weights(out: Path, tag: str) -> None:
    """final/ is safetensors only, loads without DeepSpeed, and equals the consolidated last checkpoint."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from pipeline.config import ModelConfig
    from pipeline.model.retriever import Retriever

    assert not [p for p in (out / "final").iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    probe = "import sys; from pipeline.model.retriever import Retriever; Retriever.from_pretrained(sys.argv[1]); " \
            "assert 'deepspeed' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe, str(out / "final")], cwd=ROOT, env={**os.environ, **ENV}
                          ).returncode == 0
    final = dict(Retriever.from_pretrained(out / "final", ModelConfig(dtype="float32")).named_parameters())
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints"), tag=tag)
    consolidated = {k.removeprefix("retriever."): v for k, v in consolidated.items()}
    assert set(final) <= set(consolidated)
    for name, value in final.items():
        assert torch.equal(value.detach(), consolidated[name]), name


RESUME = dict(steps=6, checkpoint_every=2, keep_checkpoints=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_qwen2vl_dir, shards):
    """The reference: the resume tests' run on 2 ranks, never interrupted."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    ref = run(torchrun_cmd(2, "-m", "pipeline.train", "--config",
                           str(write_config(tmp, "ref", tiny_qwen2vl_dir, shards[1], **RESUME))), env=ENV)
    assert ref.returncode == 0, ref.stdout[-3000:]
    return tmp / "ref"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_interrupted_then_resumed_run_ends_on_the_uninterrupted_weights(tmp_path, tiny_qwen2vl_dir, shards,
                                                                       uninterrupted, sig):
    """Interrupt a 2-rank run after its step-2 checkpoint (kill -9: no clean-up; SIGTERM: a checkpoint at the next
    step boundary), re-run the same command: every later step's loss and gradient norm, and the final weights, are
    bitwise those of the uninterrupted run (the gradient cache on, as by default)."""
    cfg = write_config(tmp_path, "cut", tiny_qwen2vl_dir, shards[1], **RESUME)
    out = tmp_path / "cut"
    proc = start(torchrun_cmd(2, "-m", "pipeline.train", "--config", str(cfg)))
    wait_for(lambda: latest(out) == "step-00000002", proc)
    os.killpg(proc.pid, sig)  # the launcher and both ranks, as a scheduler's preemption does
    proc.wait(timeout=120)
    before = metrics(out)
    assert max(before) < 6  # the signal did interrupt the run
    if sig == signal.SIGTERM:
        assert int(latest(out).split("-")[1]) == max(before)  # checkpointed the step it stopped after
    assert json.loads((out / LOCK_NAME).read_text())["job"] == "training"  # the lock file stays; the lock did not
    resumed = run(torchrun_cmd(2, "-m", "pipeline.train", "--config", str(cfg)), env=ENV)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    want, got = metrics(uninterrupted), metrics(out)
    for step in range(1, 7):
        for key in ("loss", "loss/L2-d8-p2", "grad_norm"):
            assert got[step][key] == want[step][key], (step, key)
    ref_weights, weights = final_weights(uninterrupted), final_weights(out)
    assert ref_weights.keys() == weights.keys() and len(weights) > 50
    assert [k for k in weights if not torch.equal(weights[k], ref_weights[k])] == []
    assert any("visual" in k for k in weights)  # the vision tower is among the tensors compared
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000004", "step-00000006"]
    assert not list((out / "checkpoints").glob("tmp-*"))


def test_learning_curve_leaves_training_untouched_and_matches_evaluate(tmp_path, tiny_qwen2vl_dir, shards,
                                                                      uninterrupted):
    """The resume tests' 2-rank run with the learning curve every 2 steps: final weights bitwise those of the run
    without it, nDCG@5 logged at steps 2, 4, 6, and the step-6 values equal `python -m pipeline.evaluate` on final/."""
    curve = ["full", "L2-d8-p2"]
    cfg = write_config(tmp_path, "curve", tiny_qwen2vl_dir, shards[1], **RESUME, eval_every=2, curve_budgets=curve)
    res = run(torchrun_cmd(2, "-m", "pipeline.train", "--config", str(cfg), "eval.split=train"), env=ENV)
    assert res.returncode == 0, res.stdout[-3000:]
    out = tmp_path / "curve"
    ref_weights, weights = final_weights(uninterrupted), final_weights(out)
    assert [k for k in weights if not torch.equal(weights[k], ref_weights[k])] == []
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in rows if "ndcg_at_5/L4-d32-p1" in r}
    assert sorted(logged) == [2, 4, 6]
    ev = run([sys.executable, "-m", "pipeline.evaluate", "--config", str(cfg), "--split", "train",
              "eval.log_mlflow=false", "eval.timing_pages=0", "eval.progress=false"], env=ENV)
    assert ev.returncode == 0, ev.stdout[-3000:]
    rows = {r["budget"]: r["ndcg_at_5"] for r in json.loads((out / "eval" / "results.json").read_text())["rows"]}
    for name in ("L4-d32-p1", "L2-d8-p2"):
        assert logged[6][f"ndcg_at_5/{name}"] == pytest.approx(rows[name], abs=1e-9), name
    assert len({logged[s]["ndcg_at_5/L4-d32-p1"] for s in logged}) > 1  # the curve moves as the weights do


def test_learning_curve_without_an_eval_set_fails_before_training(tmp_path, tiny_qwen2vl_dir, shards):
    cfg = write_config(tmp_path, "noeval", tiny_qwen2vl_dir, shards[0], steps=2, eval_every=1)
    res = run([sys.executable, "-m", "pipeline.train", "--config", str(cfg)], env=ENV)
    assert res.returncode == 1, res.stdout[-3000:]
    errors = [line for line in res.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "no shards of split 'eval'" in errors[0], res.stdout[-3000:]
    assert not (tmp_path / "noeval" / "metrics.jsonl").exists()  # not one step was trained
