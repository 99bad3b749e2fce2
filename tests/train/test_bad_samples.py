"""Through `python -m pipeline.train`: a sample whose image does not decode stops training with one line naming its
shard and key (exit 1, the MLflow run FAILED); with data.skip_bad_samples=true the run finishes and reports the
count as the MLflow metric bad_samples."""

import json
import sys

import pytest

from tests.helpers.corrupt import first_key, flip_image_bytes
from tests.helpers.shards import write_shards
from tests.helpers.procs import run
from tests.helpers.training import ENV, write_config

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
    shards = write_shards(tmp_path_factory.mktemp("bad") / "shards", n_pages=16, shard_size=8)
    key = first_key(shards / "train-000001.tar")
    flip_image_bytes(shards / "train-000001.tar", key, reseal=True)  # checksums agree: the renderer wrote it so
    return shards, key


def test_undecodable_sample_stops_training_in_one_line(tmp_path, tiny_qwen2vl_dir, bad_shards):
    shards, key = bad_shards
    cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, shards, steps=4)
    res = run([sys.executable, "-m", "pipeline.train", "--config", str(cfg), "data.global_batch=16"], env=ENV)
    assert res.returncode == 1, res.stdout[-3000:]
    errors = [line for line in res.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"ERROR pipeline.train: {shards}/train-000001.tar: sample {key}: the image does not decode (not an image "
        "format PIL knows)"), res.stdout[-3000:]
    assert "Traceback" not in res.stdout

    from mlflow.tracking import MlflowClient

    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert MlflowClient(record["tracking_uri"]).get_run(record["mlflow_run_id"]).info.status == "FAILED"


def test_skip_bad_samples_finishes_and_counts(tmp_path, tiny_qwen2vl_dir, bad_shards):
    shards, key = bad_shards
    cfg = write_config(tmp_path, "run", tiny_qwen2vl_dir, shards, steps=2)
    res = run([sys.executable, "-m", "pipeline.train", "--config", str(cfg), "data.global_batch=16",
               "data.skip_bad_samples=true"], env=ENV)
    assert res.returncode == 0, res.stdout[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["bad_samples"] for r in rows] == [1, 2]  # one epoch = one batch: the bad page comes up every step

    from mlflow.tracking import MlflowClient

    record = json.loads((tmp_path / "run" / "run.json").read_text())
    history = MlflowClient(record["tracking_uri"]).get_metric_history(record["mlflow_run_id"], "bad_samples")
    assert max(m.value for m in history) == 2
