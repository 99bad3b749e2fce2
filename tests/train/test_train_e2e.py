"""End to end through `python -m pipeline.train` (2 ranks, ZeRO-3, gradient cache) on synthetic shards and the tiny
Qwen2-VL retriever. The suite's reference run (the `reference_run` fixture) lowers the loss, fills one MLflow run,
logs the learning curve and consolidates final/; a second run of the same recipe, interrupted two ways (SIGTERM to the
job, kill -9) and re-run after each, ends on the reference run's weights bitwise (SIGUSR1: tests/slurm)."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.layout.lock import LOCK_NAME
from tests.helpers.procs import ROOT, kill_job, run, torchrun_cmd
from tests.helpers.reference_run import STEPS, config
from tests.helpers.shards import write_shards
from tests.helpers.training import ENV, final_weights, latest, metrics, start, wait_for, write_config


def output_dir(cfg: Path) -> Path:
    return Path(yaml.safe_load(cfg.read_text())["train"]["output_dir"])


def test_reference_run_learns_tracks_and_consolidates(reference_run, tmp_path):
    out = output_dir(reference_run)
    losses = [metrics(out)[s]["loss"] for s in range(1, STEPS + 1)]
    assert sum(losses[-4:]) / 4 < 0.75 * sum(losses[:2]) / 2, losses  # the loss falls by more than a quarter
    pages = 24  # the curve ranks the training pages: chance nDCG@5 of one relevant page among them
    chance = sum(1 / math.log2(r + 1) for r in range(1, 6)) / pages
    curve = {k: v for k, v in metrics(out)[STEPS].items() if k.startswith("ndcg_at_5/")}
    assert len(curve) == 2 and min(curve.values()) > 2 * chance, curve  # it retrieves, at both curve budgets

    from mlflow.tracking import MlflowClient

    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == STEPS
    client = MlflowClient(record["tracking_uri"])
    mrun = client.get_run(record["mlflow_run_id"])
    assert mrun.info.status == "FINISHED"
    budgets = [k for k in mrun.data.metrics if k.startswith("loss/")]
    assert len(budgets) == 16 and "loss/L4-d128-p1" in budgets and "loss/L1-d32-p2" in budgets  # 4 x 2 x 2
    for key in ("loss/L1-d32-p2", "lr", "samples_per_s", "grad_norm", "skipped_steps"):
        assert {m.step for m in client.get_metric_history(mrun.info.run_id, key)} == set(range(1, STEPS + 1)), key
    assert mrun.data.params["data.global_batch"] == "8"
    assert {a.path for a in client.list_artifacts(mrun.info.run_id)} >= {"resolved_config.yaml",
                                                                          "deepspeed_config.json"}
    assert (out / "resolved_config.yaml").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [f"step-{STEPS - 2:08d}",
                                                                            f"step-{STEPS:08d}"]  # pruned to 2
    assert not list((out / "checkpoints").glob("tmp-*"))
    check_final_weights(out, f"step-{STEPS:08d}")
    check_learning_curve(reference_run, tmp_path)


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


def check_learning_curve(cfg: Path, tmp_path: Path) -> None:
    """nDCG@5 logged every 2 steps, moving with the weights; the last step's values equal `python -m
    pipeline.evaluate` on final/ (written under tmp_path: the reference run stays as it is)."""
    rows = [json.loads(line) for line in (output_dir(cfg) / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in rows if "ndcg_at_5/L4-d128-p1" in r}
    assert sorted(logged) == list(range(2, STEPS + 1, 2))
    ev = run([sys.executable, "-m", "pipeline.evaluate", "--config", str(cfg), f"eval.output_dir={tmp_path / 'eval'}",
              "eval.log_mlflow=false", "eval.timing_pages=0"], env=ENV)
    assert ev.returncode == 0, ev.stdout[-3000:]
    results = {r["budget"]: r["ndcg_at_5"] for r in json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]}
    for name in ("L4-d128-p1", "L2-d32-p2"):
        assert logged[STEPS][f"ndcg_at_5/{name}"] == pytest.approx(results[name], abs=1e-9), name
    assert len({logged[s]["ndcg_at_5/L4-d128-p1"] for s in logged}) > 1  # the curve moves as the weights do


def test_interrupted_then_killed_then_resumed_ends_on_the_reference_weights(reference_run, tmp_path,
                                                                            tiny_qwen2vl_dir):
    """The reference recipe again, without the learning curve, into a new directory: SIGTERM to the whole job (the
    launcher and its ranks, as a scheduler sends it) after the step-2 checkpoint: a checkpoint at the next step
    boundary; re-run; kill -9 of the whole job after the next periodic checkpoint (no clean-up), re-run to the end.
    Every step's loss and gradient norm, and the final weights, are bitwise those of the reference run, in one
    MLflow run. (SIGUSR1 goes to the same handler: tests/slurm/test_train_slurm.py sends it to the ranks of a real
    training under sbatch and resumes bitwise. The reference run logs the learning curve, this one does not:
    equality also shows that the curve leaves training untouched.)"""
    shards = Path(yaml.safe_load(reference_run.read_text())["data"]["shards"])
    cfg = config(tmp_path, "cut", tiny_qwen2vl_dir, shards, curve=False)
    out, cmd = tmp_path / "cut", torchrun_cmd(2, "-m", "pipeline.train", "--config", str(cfg))

    proc = start(cmd, tmp_path / "launch1.log")
    wait_for(lambda: latest(out) == "step-00000002", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=180)
    first = max(metrics(out))
    assert latest(out) == f"step-{first:08d}" and 2 <= first < STEPS - 2  # checkpointed the step it stopped after

    proc = start(cmd)
    periodic = f"step-{first + 2 - first % 2:08d}"
    wait_for(lambda: latest(out) == periodic, proc)
    kill_job(proc)  # the launcher and both ranks
    assert max(metrics(out)) < STEPS  # kill -9 did interrupt the run
    assert json.loads((out / LOCK_NAME).read_text())["job"] == "training"  # its lock file stays, its lock does not

    resumed = run(cmd, env=ENV)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    ref_out = output_dir(reference_run)
    want, got = metrics(ref_out), metrics(out)
    for step in range(1, STEPS + 1):
        for key in ("loss", "loss/L2-d32-p2", "grad_norm"):
            assert got[step][key] == want[step][key], (step, key)
    ref_weights, weights = final_weights(ref_out), final_weights(out)
    assert ref_weights.keys() == weights.keys() and len(weights) > 50
    assert [k for k in weights if not torch.equal(weights[k], ref_weights[k])] == []
    assert any("visual" in k for k in weights)  # the vision tower is among the tensors compared
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [f"step-{STEPS - 2:08d}",
                                                                            f"step-{STEPS:08d}"]
    assert not list((out / "checkpoints").glob("tmp-*"))

    from mlflow.tracking import MlflowClient

    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    assert client.get_run(record["mlflow_run_id"]).info.status == "FINISHED"
    history = client.get_metric_history(record["mlflow_run_id"], "loss")
    assert {m.step for m in history} == set(range(1, STEPS + 1))  # one run, one history across 3 launches


@pytest.mark.heavy  # launches a training
def test_learning_curve_without_an_eval_set_fails_before_training(tmp_path, tiny_qwen2vl_dir):
    shards = write_shards(tmp_path / "shards", n_pages=8, shard_size=8)
    cfg = write_config(tmp_path, "noeval", tiny_qwen2vl_dir, shards, steps=2, eval_every=1)
    res = run([sys.executable, "-m", "pipeline.train", "--config", str(cfg)], env=ENV)
    assert res.returncode == 1, res.stdout[-3000:]
    errors = [line for line in res.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "no shards of split 'eval'" in errors[0], res.stdout[-3000:]
    assert not (tmp_path / "noeval" / "metrics.jsonl").exists()  # not one step was trained
