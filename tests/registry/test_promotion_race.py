"""Concurrent promotions of one alias: the alias ends on the candidate that beats the others and every promotion's
own report fits one serial order (a loser says it lost). First against an in-memory registry that interleaves the
calls of many threads (where the old gate-then-set is shown to break), then with real processes against a real
`mlflow server`."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from pipeline.registry.promotion import Standing, gate, holder_of, promote
from tests.helpers.fake_registry import FakeRegistry

ROOT = Path(__file__).resolve().parents[2]
SCORES = {1: 0.70, 2: 0.75, 3: 0.80, 4: 0.90}  # v1 holds the alias; v2..v4 race for it


def _registry(seed: int) -> FakeRegistry:
    reg = FakeRegistry(seed)
    reg.create_registered_model("m")
    for v, score in SCORES.items():
        reg.create_model_version("m", "src", tags={"ndcg_at_5": str(score), "eval_fingerprint": "fp",
                                                   "bytes_per_page": "100"})
    reg.set_registered_model_alias("m", "a", "1")
    return reg


def _race(reg, fn) -> dict:
    out = {}
    threads = [threading.Thread(target=lambda v=v: out.__setitem__(v, fn(reg, v))) for v in (2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _serial(decisions: dict, final: int) -> bool:
    """The applied promotions chain from v1 to the final holder, each replacing the one before it."""
    applied = {d.holder: d.candidate for d in decisions.values() if d.applied}
    holder, seen = 1, 0
    while holder in applied:
        holder, seen = applied[holder], seen + 1
    return holder == final and seen == len(applied)


def test_the_ledger_makes_concurrent_promotions_serial():
    for seed in range(60):
        reg = _registry(seed)
        decisions = _race(reg, lambda r, v: promote(r, "m", "a", 0.0, version=v))
        final = int(reg.get_model_version_by_alias("m", "a").version)
        assert final == 4, (seed, decisions)
        assert _serial(decisions, final), (seed, decisions)
        for v, d in decisions.items():
            if not d.applied:  # the loser says why: it lost the race to, or came after, a better holder
                assert d.holder is not None and d.holder > v and "\n" not in d.reason, d
                assert d.reason.startswith(("lost the race: v", f"refused: v{v} nDCG@5")), d
                assert d.lost == d.reason.startswith("lost the race"), d


def test_the_harness_catches_the_unlocked_gate():
    """Gate against the alias, then set it (the old promotion): some interleaving leaves a worse holder."""

    def unlocked(reg, v):
        d = gate("a", Standing.from_version(reg.get_model_version("m", str(v))), holder_of(reg, "m", "a"), 0.0)
        if d.move:
            reg.set_registered_model_alias("m", "a", str(v))
        return d

    finals = [int((reg := _registry(seed), _race(reg, unlocked))[0].get_model_version_by_alias("m", "a").version)
              for seed in range(60)]
    assert any(f != 4 for f in finals)


HARNESS = """
import sys, time
from pathlib import Path
import mlflow, mlflow.tracking  # loaded before the start line, so both processes start their calls together
from pipeline.promote import main
go = Path(sys.argv[1])
Path(f"{go}.ready-{sys.argv[-1]}").touch()
while not go.exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[2:]))
"""


def _register(client, uri, scores: dict[int, float]) -> None:
    mlflow.set_tracking_uri(uri)
    client.create_registered_model("race")
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/w.txt")
    for v, score in scores.items():
        client.create_model_version("race", f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                    tags={"ndcg_at_5": str(score), "eval_fingerprint": "fp", "bytes_per_page": "1"})


def test_two_concurrent_processes_against_a_live_server(tmp_path, tracking_uri):
    uri = tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _register(client, uri, {1: 0.70, 2: 0.80, 3: 0.90})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outcomes = []
    for r in range(4):
        alias, go = f"race{r}", tmp_path / f"go{r}"
        client.set_registered_model_alias("race", alias, "1")
        procs = {v: subprocess.Popen([sys.executable, "-c", HARNESS, str(go), "--tracking-uri", uri, "--model",
                                      "race", "--alias", alias, "--version", str(v)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for v in (2, 3)}
        deadline = time.time() + 60
        while not all(Path(f"{go}.ready-{v}").exists() for v in procs) and time.time() < deadline:
            time.sleep(0.05)  # until both processes have imported everything and poll for the start file
        go.touch()
        res = {v: (p.wait(timeout=120), p.stdout.read().strip(), p.stderr.read()[-2000:]) for v, p in procs.items()}
        final = client.get_model_version_by_alias("race", alias).version
        assert final == "3", (r, res)
        assert res[3][0] == 0 and res[3][1].startswith("promoted: v3 "), res
        code2, line2, _ = res[2]
        if code2 == 0:  # v2 went first and was then beaten: a serial history
            assert line2 == "promoted: v2 beats holder v1 on eval fp: nDCG@5 0.8000 > 0.7000", res
            assert res[3][1].startswith("promoted: v3 beats holder v2"), res
        else:  # v2 lost (raced and lost, or came after v3): it says so, in one line
            assert code2 == 1 and "\n" not in line2, res
            assert line2.startswith((f"lost the race: v3 took '{alias}' first; refused: v2",
                                     "refused: v2")), res
            assert "below holder v3's 0.9000" in line2 and res[3][1].startswith("promoted: v3 beats holder v1")
        outcomes.append(code2)
    print("v2 exit codes per round:", outcomes)
