"""A resumed run's wall time: wall.json holds the last start only; the killed starts are read back from the MLflow
run's loss records (counted from the run's start, or a later segment's first record, to each segment's last record),
through a real SQLite tracking store, and a run whose store is gone is marked unknown, not counted as whole."""

import json
import logging

import pytest

import benchmarks.quality_runs as qr
from benchmarks.quality_summary import markdown, wall_notes
from benchmarks.resumed_walls import killed_s, resumed_train_s

S = 1000  # ms per second


def records(steps, first_s: float, every_s: float = 60.0) -> list[tuple[int, int]]:
    """(step, timestamp ms): one loss record every `every_s` seconds from `first_s`."""
    return [(step, int((first_s + i * every_s) * S)) for i, step in enumerate(steps)]


# A run started at t=0 s; its first start logs steps 20..400 from t=100 (one per minute, the last at t=1240) and is
# killed; the last start (a checkpoint at 400) begins at t=2000, logs 420..600 from t=2050 (the last at t=2590), the
# MLflow run ends at t=2600 and the stage at t=2620: wall.json says 620 s. Killed training: 1240 s.
FIRST = records(range(20, 401, 20), 100)
LAST = records(range(420, 601, 20), 2050)


def test_a_killed_start_whose_steps_run_on_is_counted_from_the_run_start_to_its_last_record():
    assert killed_s(FIRST + LAST, 0, 2600 * S, 620.0) == pytest.approx(1240.0)


def test_records_a_killed_start_made_past_its_checkpoint_are_its_own():
    # killed after logging 420 and 440 (checkpoint 400): the last start logs 420 and 440 again
    first = records(range(20, 441, 20), 100)  # the last at t=1360
    assert killed_s(first + LAST, 0, 2600 * S, 620.0) == pytest.approx(1360.0)


def test_each_killed_start_counts_its_own_span_not_the_idle_time_between():
    first = records(range(20, 141, 20), 100)  # t=100..460, killed; a checkpoint at 100
    second = records(range(120, 261, 20), 1000)  # t=1000..1420, killed; a checkpoint at 200
    last = records(range(220, 601, 20), 3000)  # t=3000..4140
    assert killed_s(first + second + last, 0, 4150 * S, 1200.0) == pytest.approx(460.0 + 420.0)


def test_a_run_started_once_has_no_killed_time():  # negative control: not its own span, not its start-up
    assert killed_s(records(range(20, 601, 20), 2050), 2010 * S, 2600 * S, 620.0) == 0.0
    assert killed_s([], 2010 * S, 2600 * S, 620.0) == 0.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite tracking store holding one resumed run (the scenario above, at an epoch offset) and one run
    started once; {"uri", "resumed", "whole"}: their run ids."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("walls") / "mlruns.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = client.create_experiment("walls")
    t0 = 1_700_000_000 * S
    ids = {}
    for name, recs, start_s, end_s in (("resumed", FIRST + LAST, 0, 2600), ("whole", LAST, 2010, 2600)):
        run = client.create_run(exp, start_time=t0 + start_s * S, run_name=name)
        for step, t in recs:
            client.log_metric(run.info.run_id, "loss", 1.0, timestamp=t0 + t, step=step)
            client.log_metric(run.info.run_id, "lr", 1e-4, timestamp=t0 + 5 * S, step=step)  # other keys: ignored
        client.set_terminated(run.info.run_id, end_time=t0 + end_s * S)
        ids[name] = run.info.run_id
    return {"uri": uri, **ids}


def run_dir(tmp_path, store, which: str, train_s: float = 620.0):
    """A finished run directory (as quality_runs leaves it) whose run.json points at `which` run of the store."""
    d = tmp_path / "runs" / f"distill+lr6e-4-s{'01'[which == 'whole']}"
    for split in qr.SPLITS:
        (d / f"eval-{split}").mkdir(parents=True)
        (d / f"eval-{split}" / "results.json").write_text(json.dumps({"eval_fingerprint": split, "rows": []}))
    (d / "wall.json").write_text(json.dumps({"train_s": train_s, "eval_validation_s": 10.0, "eval_test_s": 20.0,
                                             "threads": 1}))
    (d / "run.json").write_text(json.dumps({"mlflow_run_id": store[which], "tracking_uri": store["uri"],
                                            "experiment": "walls", "steps": 600}))
    return d


def test_a_resumed_run_s_wall_time_adds_its_killed_start_read_from_the_tracking_store(tmp_path, store):
    resumed = qr.load_run(run_dir(tmp_path, store, "resumed"), "distill+lr6e-4", 0)
    assert resumed["resumed_s"] == pytest.approx(1240.0)
    assert resumed["wall_s"] == pytest.approx(620.0 + 10.0 + 20.0 + 1240.0)
    whole = qr.load_run(run_dir(tmp_path, store, "whole"), "distill+lr6e-4", 1)
    assert whole["resumed_s"] == 0.0 and whole["wall_s"] == pytest.approx(650.0)


def test_an_unreadable_store_marks_the_wall_time_partial_and_creates_nothing(tmp_path, store, caplog):
    d = run_dir(tmp_path, store, "resumed")
    gone = tmp_path / "moved" / "mlruns.db"
    (d / "run.json").write_text(json.dumps({**json.loads((d / "run.json").read_text()),
                                            "tracking_uri": f"sqlite:///{gone}"}))
    with caplog.at_level(logging.WARNING, logger="experiment"):
        got = qr.load_run(d, "distill+lr6e-4", 0)
    assert got["resumed_s"] is None and got["wall_s"] == pytest.approx(650.0)
    assert "counts the last start only" in caplog.text and not gone.exists()
    (d / "run.json").write_text(json.dumps({**json.loads((d / "run.json").read_text()), "tracking_uri": store["uri"],
                                            "mlflow_run_id": "0" * 32}))
    assert resumed_train_s(d, 620.0) is None  # a run the store does not hold
    (d / "run.json").unlink()
    assert resumed_train_s(d, 620.0) is None


def test_the_table_marks_resumed_and_partial_wall_times():
    result = {"wall_s": {"default": [2376.0, 650.0, 900.0]}, "resumed_s": {"default": [1492.0, 0.0, None]}}
    assert wall_notes(result) == ["- wall s per run, default: 2376 (resumed; 1492 before the last start), 650, "
                                  "900+ (earlier starts unknown)"]
    table = {"L1-d4-p1": {"mean": 0.5, "std": 0.0, "seeds": 3}}
    assert wall_notes(result)[0] in markdown({**result, "recipes": {"default": table},
                                              "bytes_per_page": {"L1-d4-p1": 8}})
