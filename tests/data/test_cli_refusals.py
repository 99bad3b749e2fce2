"""The refusals through the public command lines: exit 1 and one line naming the manifest entry or shard, and no
file read or command run outside the shard directory (`pipe:` names once ran a shell command in evaluation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.corrupt import change_query_letters, edit_manifest
from tests.helpers.shards import write_shards

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def last_line(res: subprocess.CompletedProcess) -> str:
    return res.stderr.strip().splitlines()[-1]


@pytest.fixture
def evalset(tmp_path):
    return write_shards(tmp_path / "shards", n_pages=8, shard_size=4, split="eval")


def test_shard_verifier_refuses_traversal_and_wrong_counts(evalset, tmp_path):
    assert cli("-m", "data_prep.shards", str(evalset)).returncode == 0
    edit_manifest(evalset, 1, samples=999)
    res = cli("-m", "data_prep.shards", str(evalset))
    assert res.returncode == 1 and "FAILED" in res.stdout
    assert f"{evalset}/eval-000001.tar: holds 4 samples, the manifest says 999" in res.stderr.splitlines()
    edit_manifest(evalset, 1, name="../outside/eval-000001.tar")
    res = cli("-m", "data_prep.shards", str(evalset))
    assert res.returncode == 1
    assert res.stderr == (f"{evalset}/manifest.json shards[1] ('../outside/eval-000001.tar'): shard name "
                          "'../outside/eval-000001.tar' is a path; only plain shard names are read\n")


def test_evaluate_refuses_a_pipe_name_and_runs_nothing(evalset, tmp_path):
    marker = tmp_path / "MARKER"
    edit_manifest(evalset, 0, name=f"pipe:touch {marker}")
    # `--shards .` from inside the shard directory: Path('.') / name once stringified to the bare `pipe:` URL
    res = cli("-m", "pipeline.evaluate", "--shards", ".", "--model", str(tmp_path / "none"), "--output-dir",
              str(tmp_path / "eval"), cwd=evalset)
    assert res.returncode == 1, res.stderr[-2000:]
    assert last_line(res).endswith(f"manifest.json shards[0] ('pipe:touch {marker}'): shard name "
                                   f"'pipe:touch {marker}' has a URL scheme; only plain shard names are read")
    assert not marker.exists() and not (tmp_path / "eval").exists()


def test_evaluate_refuses_a_corrupt_eval_shard(evalset, tmp_path):
    change_query_letters(evalset / "eval-000000.tar")
    res = cli("-m", "pipeline.evaluate", "--shards", str(evalset), "--model", str(tmp_path / "none"),
              "--output-dir", str(tmp_path / "eval"))
    assert res.returncode == 1
    assert last_line(res).endswith(f"{evalset}/eval-000000.tar: sha256 differs from the manifest (the shard was "
                                   "changed or corrupted)")
    assert "Traceback" not in res.stderr and not (tmp_path / "eval").exists()


def test_serve_index_refuses_a_pipe_name(evalset, tmp_path):
    marker = tmp_path / "MARKER"
    edit_manifest(evalset, 1, name=f"pipe:touch {marker}")
    res = cli("-m", "pipeline.serve", "index", "--shards", str(evalset), "--index-dir", str(tmp_path / "index"),
              "--tracking-uri", f"sqlite:///{tmp_path}/mlruns.db")
    assert res.returncode == 1
    assert last_line(res).endswith("has a URL scheme; only plain shard names are read")
    assert not marker.exists() and not (tmp_path / "index").exists()


def test_train_refuses_a_corrupt_train_shard_before_the_model_loads(tmp_path):
    shards = write_shards(tmp_path / "shards", n_pages=16, shard_size=8)
    change_query_letters(shards / "train-000001.tar")  # wrong labels, same size
    cfg = {"model": {"name_or_path": str(tmp_path / "no-model")}, "data": {"shards": str(shards), "global_batch": 8},
           "train": {"output_dir": str(tmp_path / "run")},
           "tracking": {"tracking_uri": f"sqlite:///{tmp_path}/mlruns.db"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = cli("-m", "pipeline.train", "--config", str(tmp_path / "c.yaml"))
    assert res.returncode == 1, res.stderr[-2000:]
    assert last_line(res).endswith(f"{shards}/train-000001.tar: sha256 differs from the manifest (the shard was "
                                   "changed or corrupted)")
    assert "Traceback" not in res.stderr
