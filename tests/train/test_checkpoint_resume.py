"""Through the real `python -m pipeline.train`, on a copy of the suite's reference run: a latest checkpoint whose
optimizer state had bits flipped (same size) is skipped with a warning naming it, the run resumes from the older one
that verifies (never from step 0) and ends on the uninterrupted run's weights bit for bit; with none intact the
command refuses in one line, touching nothing and leaving the finished MLflow run alone; a crash ends the MLflow run
FAILED, and a fresh start opens a fresh run. Artifacts land beside the tracking store, never in the working
directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.procs import ROOT, torchrun_cmd
from tests.helpers.reference_run import STEPS
from tests.helpers.run_state import mlflow_run, run_files
from tests.helpers.shards import write_shards
from tests.helpers.training import copy_run, final_weights, metrics, write_config

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)

MODEL = "zero_pp_rank_0_mp_rank_00_model_states.pt"
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def flip_bits(path: Path) -> None:
    """Invert 64 bytes in the middle of `path` (tensor data): the size stays, the content changes."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def train(cfg: Path, cwd: Path, *overrides: str, ranks: int = 1) -> subprocess.CompletedProcess:
    ds = f"train.deepspeed_config={ROOT / 'deepspeed_configs' / 'zero3.json'}"  # cwd is not the checkout
    cmd = torchrun_cmd(ranks, "-m", "pipeline.train") if ranks > 1 else [sys.executable, "-m", "pipeline.train"]
    return subprocess.run([*cmd, "--config", str(cfg), ds, *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "s", n_pages=8, shard_size=8)


def test_broken_latest_is_skipped_and_none_complete_refuses(reference_run, tmp_path):
    """A copy of the reference run (2 ranks, checkpoints step-10 and step-12): bits flipped in step-12's optimizer
    state make the re-run resume from step-10 and finish in the same MLflow run on the same weights; with every
    checkpoint corrupt, one line and nothing touched, before the model or DeepSpeed starts."""
    cfg = copy_run(reference_run, tmp_path, "run")
    out, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    last, before_last = f"step-{STEPS:08d}", f"step-{STEPS - 2:08d}"
    assert sorted(p.name for p in ckpts.glob("step-*")) == [before_last, last]
    run_id = mlflow_run(out).info.run_id
    uninterrupted = final_weights(out)

    optim = ckpts / last / OPTIM
    flip_bits(optim)
    again = train(cfg, tmp_path, ranks=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (f"skipped checkpoint {last} ({OPTIM} does not match the sha256 recorded at save (same size, other "
            f"bytes)); resuming from {before_last}") in again.stderr, again.stderr[-3000:]
    assert "resumed from" in again.stderr and f"(step {STEPS - 2})" in again.stderr
    assert max(metrics(out)) == STEPS and mlflow_run(out).info.run_id == run_id  # continued, not restarted
    weights = final_weights(out)  # the last two steps trained again from the good checkpoint: the same weights
    assert weights.keys() == uninterrupted.keys() and len(weights) > 50
    assert [k for k in weights if not torch.equal(weights[k], uninterrupted[k])] == []
    assert sorted(p.name for p in ckpts.glob("step-*")) == [before_last, last]
    assert "attention:" in again.stderr  # the model's load is logged (the refusal below must not get this far)

    flip_bits(optim)
    flip_bits(ckpts / before_last / MODEL)
    (ckpts / "latest").write_text("step-00000099")
    before = run_files(out)
    refused = train(cfg, tmp_path, f"train.steps={STEPS + 2}")
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "no complete and intact checkpoint in" in errors[0], refused.stderr[-3000:]
    for why in ("step-00000099 (missing)", f"{last} ({OPTIM} does not match the sha256",
                f"{before_last} ({MODEL} does not match the sha256"):
        assert why in errors[0]
    assert "Traceback" not in refused.stderr and "Refusing to restart from step 0" in errors[0]
    assert run_files(out) == before  # nothing pruned or written
    assert "attention:" not in refused.stderr  # decided before any model loads (it logs its attention kernel)
    assert mlflow_run(out).info.status == "FINISHED"  # the finished run's status is left alone


def _bad_shards(base: Path) -> Path:
    """Synthetic shards whose second page is not an image (a bad sample), manifest sizes kept consistent."""
    import hashlib
    import tarfile

    out = write_shards(base, n_pages=8, shard_size=8)
    manifest = json.loads((out / "manifest.json").read_text())
    name = manifest["shards"][0]["name"]
    with tarfile.open(out / name) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    pngs = [m for m, _ in members if m.name.endswith(".png")]
    with tarfile.open(out / name, "w") as tar:
        for m, data in members:
            if m.name == pngs[1].name:
                data = b"not a png" * 20
                m.size = len(data)
            tar.addfile(m, __import__("io").BytesIO(data))
    data = (out / name).read_bytes()
    manifest["shards"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_crash_marks_failed_and_a_fresh_start_is_a_fresh_run(tmp_path, tiny_qwen2vl_dir, shards):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    bad = _bad_shards(tmp_path / "bad")
    cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, bad, steps=2, checkpoint_every=10)
    out = tmp_path / "run"
    crashed = train(cfg, cwd)
    assert crashed.returncode == 1 and "the image does not decode" in crashed.stderr  # one line, no traceback
    failed = mlflow_run(out)
    assert failed.info.status == "FAILED", failed.info.status
    assert failed.data.params["data.shards"] == str(bad)

    fixed = train(cfg, cwd, f"data.shards={shards}")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    fresh = mlflow_run(out)
    assert fresh.info.run_id != failed.info.run_id and fresh.info.status == "FINISHED"
    assert fresh.data.params["data.shards"] == str(shards)  # the new params, not the crashed run's
    from mlflow import MlflowClient

    old = MlflowClient(f"sqlite:///{tmp_path / 'run'}.db").get_run(failed.info.run_id)
    assert old.info.status == "FAILED" and old.data.tags["superseded_by"] == fresh.info.run_id
    root = (tmp_path / "mlartifacts").as_uri()
    assert fresh.info.artifact_uri.startswith(root) and failed.info.artifact_uri.startswith(root)
    assert (tmp_path / "mlartifacts").is_dir() and not (cwd / "mlruns").exists() and not list(cwd.iterdir())
