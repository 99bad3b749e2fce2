"""First-time set-up of a new SQLite tracking store by several processes at once (as when two trainings start on a
fresh store): every process gets its run logged, because `prepare_uri` serialises MLflow's schema set-up with a
flock beside the file. Negative control: the same start without it crashes in MLflow's set-up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)
START = """
import sys
from types import SimpleNamespace
uri, serialise = sys.argv[1], sys.argv[2] == "1"
import mlflow
from mlflow import MlflowClient
from pipeline.tracking_store import ensure_experiment, prepare_uri
print("ready", flush=True)
sys.stdin.readline()  # start together: every process has imported MLflow
mlflow.set_tracking_uri(prepare_uri(uri) if serialise else uri)
client = MlflowClient(tracking_uri=uri)
eid = ensure_experiment(client, SimpleNamespace(experiment="test", artifact_location=None, tracking_uri=uri))
with mlflow.start_run(experiment_id=eid):
    mlflow.log_param("started", "yes")
"""


def start_together(db: Path, n: int, serialise: bool) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-c", START, f"sqlite:///{db}", str(int(serialise))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(n)]
    for p in procs:  # wait until each has imported MLflow (lines before "ready" are its warnings)
        seen = []
        while not (seen and seen[-1].startswith("ready")):
            seen.append(p.stdout.readline())
            assert seen[-1], "".join(seen)  # it ended before it was ready
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=180), p.stdout.read()) for p in procs]


def test_three_first_starts_on_a_new_sqlite_store_all_succeed(tmp_path):
    from mlflow import MlflowClient

    db = tmp_path / "new" / "mlruns.db"
    results = start_together(db, 3, serialise=True)
    assert [r.returncode for r in results] == [0, 0, 0], [r.stdout[-2000:] for r in results]
    runs = MlflowClient(f"sqlite:///{db}").search_runs([MlflowClient(f"sqlite:///{db}").get_experiment_by_name(
        "test").experiment_id])
    assert len(runs) == 3 and all(r.data.params == {"started": "yes"} for r in runs)


def test_negative_control_unserialised_set_up_crashes(tmp_path):
    for trial in range(3):  # a race: tried up to three times so the control cannot flake
        results = start_together(tmp_path / f"t{trial}" / "mlruns.db", 3, serialise=False)
        if any(r.returncode != 0 for r in results):
            break
    assert any(r.returncode != 0 for r in results), "three unserialised first starts never collided"
