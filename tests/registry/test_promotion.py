"""Gated promotion: the pure gate, then the real thing against a live `mlflow server` (versions, aliases, CLI)."""

import subprocess
import sys

import mlflow
from mlflow import MlflowClient

from pipeline.registry.promotion import Standing, describe, gate, promote

NAME = "retriever-test"


def test_gate_cases():
    h = Standing(1, 0.80, "fpA", 4096)
    assert gate("a", Standing(2, 0.81, "fpA", 1024), h, 0.005).move
    assert gate("a", Standing(2, 0.796, "fpA", 1024), h, 0.005).move  # tie within tolerance
    worse = gate("a", Standing(2, 0.79, "fpA", 1024), h, 0.005)
    assert not worse.move and worse.reason.startswith("refused") and "\n" not in worse.reason
    other = gate("a", Standing(2, 0.99, "fpB", 1024), h, 0.005)
    assert not other.move and "fpB" in other.reason and "fpA" in other.reason
    assert not gate("a", Standing(1, 0.80, "fpA", 4096), h, 0.005).move  # already holds
    assert not gate("a", Standing(2, float("nan"), "fpA", 1.0), None, 0.005).move  # untagged
    assert gate("a", Standing(2, 0.1, "fpA", 1.0), None, 0.005).move  # a free alias


def _version(client, tmp_path, ndcg, fp, nbytes):
    """A registered version whose files (one text file) live in a run's artifacts, tagged like a variant."""
    with mlflow.start_run() as run:
        mlflow.log_text(f"{ndcg} {fp}", "model/weights.txt")
    tags = {"ndcg_at_5": str(ndcg), "eval_fingerprint": fp, "bytes_per_page": str(nbytes)}
    src = f"{run.info.artifact_uri}/model"
    return int(client.create_model_version(NAME, src, run_id=run.info.run_id, tags=tags).version)


def _cli(uri, *args):
    cmd = [sys.executable, "-m", "pipeline.promote", "--tracking-uri", uri, "--model", NAME, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_promotion_against_live_server(tmp_path, tracking_uri):
    uri = tracking_uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    v1 = _version(client, tmp_path, 0.70, "fpA", 4096)
    v2 = _version(client, tmp_path, 0.80, "fpA", 1024)
    v3 = _version(client, tmp_path, 0.60, "fpA", 256)
    v4 = _version(client, tmp_path, 0.95, "fpB", 1024)
    v5 = _version(client, tmp_path, 0.798, "fpA", 512)

    assert promote(client, NAME, "balanced", 0.005, version=v1).applied
    before = {v.version: (v.tags, v.description) for v in client.search_model_versions(f"name = '{NAME}'")}
    worse = promote(client, NAME, "balanced", 0.005, version=v3)
    other_eval = promote(client, NAME, "balanced", 0.005, version=v4)
    dry = promote(client, NAME, "balanced", 0.005, version=v2, dry_run=True)
    assert not worse.move and not other_eval.move and "fpB" in other_eval.reason
    assert dry.move and not dry.applied
    after = {v.version: (v.tags, v.description) for v in client.search_model_versions(f"name = '{NAME}'")}
    assert after == before  # refusals and dry runs change nothing
    assert client.get_model_version_by_alias(NAME, "balanced").version == str(v1)

    better = _cli(uri, "--alias", "balanced", "--version", str(v2))
    assert better.returncode == 0 and better.stdout.startswith("promoted: v2 beats holder v1"), better
    moved = client.get_model_version_by_alias(NAME, "balanced")
    assert moved.version == str(v2) and "beats holder v1" in moved.tags["promotion.balanced"]
    assert "alias 'balanced'" in moved.description
    assert "replaced by v2" in client.get_model_version(NAME, str(v1)).tags["demotion.balanced"]

    # Best under 600 bytes/page is v5 (0.798), a tie with v2 within 0.005 on the same eval set.
    tie = promote(client, NAME, "balanced", 0.005, max_bytes_per_page=600)
    assert tie.applied and tie.candidate == v5 and "ties holder v2" in tie.reason
    refused = _cli(uri, "--alias", "balanced", "--max-bytes-per-page", "300", "promote.tolerance=0.0")
    assert refused.returncode == 1 and len(refused.stdout.strip().splitlines()) == 1
    assert client.get_model_version_by_alias(NAME, "balanced").version == str(v5)
    listing = {line.split()[0]: line for line in describe(client, NAME)[1:]}
    assert listing[str(v5)].endswith("balanced") and "0.7980" in listing[str(v5)]
    assert not listing[str(v2)].endswith("balanced")

    local = mlflow.artifacts.download_artifacts(f"models:/{NAME}@balanced", dst_path=str(tmp_path / "dl"))
    assert (tmp_path / "dl").exists() and "0.798 fpA" in open(f"{local}/weights.txt").read()
