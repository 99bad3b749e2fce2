"""Through the real `python -m pipeline.train`, refusals that leave everything as it was: a second training on an
output directory in use is refused in one line naming the holder (host, PID, start time) while the first finishes
intact; a resume whose data or batch settings differ from its checkpoint is refused in one line before the model
loads, and the finished MLflow run keeps its status; Ctrl-C ends the run KILLED (exit 130); a disk that fills
during a checkpoint is one line naming the directory, and the earlier checkpoint resumes. (kill -9 of a holder then
a new job: tests/train/test_train_e2e.py's 2-rank kill -9 and resume, and tests/layout/test_lock.py.)"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data.stream import TrainStream
from pipeline.layout.lock import LOCK_NAME
from pipeline.layout.shards import split_shards
from pipeline.train.checkpoint import problem
from tests.helpers.procs import kill_job, run
from tests.helpers.run_state import mlflow_run, run_files
from tests.helpers.shards import write_shards
from tests.helpers.training import ENV, latest, metrics, start, wait_for, write_config

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "s", n_pages=8, shard_size=8)


@pytest.fixture
def launch():
    """tests.helpers.training.start, and whatever is still running when the test ends (it failed part-way) is killed
    by PID, so it does not go on training beside the next test."""
    started: list[subprocess.Popen] = []

    def launch_one(cmd: list[str], log: Path) -> subprocess.Popen:
        started.append(start(cmd, log))
        return started[-1]

    yield launch_one
    for proc in started:
        if proc.poll() is None:
            kill_job(proc)


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


def runs_of(out: Path) -> list:
    from mlflow import MlflowClient

    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    return client.search_runs([client.get_experiment_by_name(record["experiment"]).experiment_id])


def test_busy_directory_and_incompatible_resume_are_refused_and_ctrl_c_is_killed(tmp_path, tiny_qwen2vl_dir,
                                                                                 shards, launch):
    cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, shards, steps=6, checkpoint_every=2)
    out, cmd = tmp_path / "run", [sys.executable, "-m", "pipeline.train", "--config", str(cfg)]
    first = launch(cmd, tmp_path / "first.log")
    wait_for(lambda: (out / "metrics.jsonl").is_file(), first)
    os.killpg(first.pid, signal.SIGSTOP)  # frozen mid-run, still holding the directory
    try:
        before = run_files(out)
        second = run(cmd, env=ENV)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    holder = json.loads((out / LOCK_NAME).read_text())
    assert second.returncode == 1 and errors(second.stdout) == [errors(second.stdout)[0]], second.stdout[-3000:]
    assert errors(second.stdout)[0].endswith(
        f"{out} is in use by training on host {socket.gethostname()}, PID {first.pid}, started {holder['started']} "
        f"(lock {out / LOCK_NAME}; it is released when that process ends): wait for it, or use another directory")
    assert "Traceback" not in second.stdout and "attention:" not in second.stdout  # before the model loads
    assert run_files(out) == before  # the refused job wrote nothing
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]  # every step once: no second job logged into the run
    assert [r.info.status for r in runs_of(out)] == ["FINISHED"]
    assert [problem(p, content=True) for p in sorted((out / "checkpoints").glob("step-*"))] == [None, None]
    assert (out / "final" / "retriever_config.json").is_file()

    finished, before = mlflow_run(out), run_files(out)
    refused = run(cmd + ["train.steps=8", "data.global_batch=4"], env=ENV)
    assert refused.returncode == 1 and len(errors(refused.stdout)) == 1, refused.stdout[-3000:]
    assert errors(refused.stdout)[0].endswith(
        f"cannot resume from {out / 'checkpoints' / 'step-00000006'}: data.global_batch was 8 at the checkpoint, "
        "now 4. Resume with the checkpoint's settings, or train into a new train.output_dir")
    assert "Traceback" not in refused.stdout and "attention:" not in refused.stdout  # before the model loads
    after = mlflow_run(out)
    assert (after.info.status, after.info.end_time) == ("FINISHED", finished.info.end_time)
    assert len(runs_of(out)) == 1 and run_files(out) == before

    third = launch(cmd + ["train.steps=500", "train.checkpoint_every=1000"], tmp_path / "third.log")
    wait_for(lambda: max(metrics(out)) >= 8, third)
    third.send_signal(signal.SIGINT)  # Ctrl-C reaches the training process
    assert third.wait(timeout=120) == 130
    log = (tmp_path / "third.log").read_text()
    assert len(errors(log)) == 1 and "interrupted: the MLflow run ends KILLED" in errors(log)[0], log[-3000:]
    assert mlflow_run(out).info.status == "KILLED" and mlflow_run(out).info.run_id == finished.info.run_id


def test_resume_settings_that_change_the_stream_are_named(shards, tmp_path):
    """Each setting a checkpointed stream position depends on is refused by name; the world size is not one."""
    infos = split_shards(shards, "train")
    base = TrainStream(infos, 8, 1, 0, seed=0).state_dict()
    assert TrainStream(infos, 8, 2, 1, seed=0).resume_problem(base) is None  # same global batches on 2 ranks
    assert TrainStream(infos, 4, 1, 0, seed=0).resume_problem(base) == \
        "data.global_batch was 8 at the checkpoint, now 4"
    assert TrainStream(infos, 8, 1, 0, seed=1).resume_problem(base) == "data.seed was 0 at the checkpoint, now 1"
    other = write_shards(tmp_path / "other", n_pages=8, shard_size=4, seed=5)
    why = TrainStream(split_shards(other, "train"), 8, 1, 0, seed=0).resume_problem(base)
    assert why.startswith("the data (data.shards/data.split: shard names, sizes, sha256) was ")


def test_disk_full_during_a_checkpoint_is_one_line_and_the_last_one_resumes(tmp_path, tiny_qwen2vl_dir, shards,
                                                                           launch):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(disk)], check=False).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        out = disk / "run"
        cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, shards, steps=8, checkpoint_every=2)
        cmd = [sys.executable, "-m", "pipeline.train", "--config", str(cfg), f"train.output_dir={out}"]
        proc = launch(cmd, tmp_path / "full.log")
        wait_for(lambda: latest(out) == "step-00000002", proc)
        os.killpg(proc.pid, signal.SIGSTOP)
        one = sum(p.stat().st_size for p in (out / "checkpoints" / "step-00000002").iterdir())
        size = shutil.disk_usage(disk).used + one // 2  # room for half of the next checkpoint
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)
        os.killpg(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=600) == 1
        log = (tmp_path / "full.log").read_text()
        assert len(errors(log)) == 1 and "Traceback" not in log, log[-3000:]
        m = re.search(r"no space left on the device of (\S+) while writing checkpoint step-(\d+): the last complete "
                      r"checkpoint step-(\d+) is intact; free space and rerun the same command to resume$",
                      errors(log)[0])
        assert m and m[1] == str(out / "checkpoints") and int(m[3]) == int(m[2]) - 2, errors(log)[0]
        assert problem(out / "checkpoints" / f"step-{m[3]}", content=True) is None  # no data lost
        assert not list((out / "checkpoints").glob("tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)
        again = run(cmd, env=ENV)
        assert again.returncode == 0 and f"(step {int(m[3])})" in again.stdout, again.stdout[-3000:]
        assert max(metrics(out)) == 8
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
