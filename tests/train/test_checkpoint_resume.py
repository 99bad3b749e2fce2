"""Through the real `python -m pipeline.train`: a latest checkpoint whose optimizer state had bits flipped (same
size) is skipped with a warning naming it, the run resumes from the older one that verifies (never from step 0)
and ends on the uninterrupted run's weights bit for bit; with none intact the command refuses in one line,
touching nothing; a crash ends the MLflow run FAILED, and a fresh start opens a fresh run. Artifacts land beside
the tracking store, never in the working directory."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.layout.lock import LOCK_NAME
from tests.data.synthetic import write_shards
from tests.train.launch import ROOT, final_weights
from tests.train.test_train_e2e import metrics, write_config

MODEL = "zero_pp_rank_0_mp_rank_00_model_states.pt"
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def flip_bits(path: Path) -> None:
    """Invert 64 bytes in the middle of `path` (tensor data): the size stays, the content changes."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def train(cfg: Path, cwd: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    ds = f"train.deepspeed_config={ROOT / 'deepspeed_configs' / 'zero3.json'}"  # cwd is not the checkout
    res = subprocess.run([sys.executable, "-m", "pipeline.train", "--config", str(cfg), ds, *overrides], cwd=cwd,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return res, time.perf_counter() - t0


def files(out: Path) -> dict[str, int]:
    """mtime of every file under a run directory except the lock (a starting job writes its name there)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.name != LOCK_NAME}


def mlflow_run(out: Path):
    from mlflow import MlflowClient

    record = json.loads((out / "run.json").read_text())
    return MlflowClient(record["tracking_uri"]).get_run(record["mlflow_run_id"])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "s", n_pages=8, shard_size=8)


def test_broken_latest_is_skipped_and_none_complete_refuses(tmp_path, tiny_qwen2vl_dir, shards):
    cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, shards, steps=4, checkpoint_every=2, keep_checkpoints=2)
    out, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    first, _ = train(cfg, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000002", "step-00000004"]
    run_id = mlflow_run(out).info.run_id
    uninterrupted = final_weights(out)

    flip_bits(ckpts / "step-00000004" / OPTIM)
    again, _ = train(cfg, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (f"skipped checkpoint step-00000004 ({OPTIM} does not match the sha256 recorded at save (same size, "
            "other bytes)); resuming from step-00000002") in again.stderr, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "(step 2)" in again.stderr
    assert max(metrics(out)) == 4 and mlflow_run(out).info.run_id == run_id  # continued, not restarted
    weights = final_weights(out)  # steps 3 and 4 trained again from the good checkpoint: the same weights
    assert weights.keys() == uninterrupted.keys() and len(weights) > 50
    assert [k for k in weights if not torch.equal(weights[k], uninterrupted[k])] == []
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000002", "step-00000004"]

    flip_bits(ckpts / "step-00000004" / OPTIM)
    flip_bits(ckpts / "step-00000002" / MODEL)
    (ckpts / "latest").write_text("step-00000009")
    before = files(out)
    refused, _ = train(cfg, tmp_path, "train.steps=6")
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "no complete and intact checkpoint in" in errors[0], refused.stderr[-3000:]
    for why in ("step-00000009 (missing)", f"step-00000004 ({OPTIM} does not match the sha256",
                f"step-00000002 ({MODEL} does not match the sha256"):
        assert why in errors[0]
    assert "Traceback" not in refused.stderr and "Refusing to restart from step 0" in errors[0]
    assert files(out) == before  # nothing written
    assert "attention:" not in refused.stderr  # refused before the model loads
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
    crashed, _ = train(cfg, cwd)
    assert crashed.returncode == 1 and "the image does not decode" in crashed.stderr  # one line, no traceback
    failed = mlflow_run(out)
    assert failed.info.status == "FAILED", failed.info.status
    assert failed.data.params["data.shards"] == str(bad)

    fixed, _ = train(cfg, cwd, f"data.shards={shards}")
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
