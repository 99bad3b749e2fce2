"""The quality experiment's runs without training: each stage is reused from the files in its run directory (and only
the missing stage runs), the choice is made automatically per role (candidates at the choice seeds, the winner at the
role's seeds), the last head is shared for truncation, and one experiment holds an output directory at a time."""

import json
import logging
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

import benchmarks.quality_experiment as qe
import benchmarks.quality_runs as qr
from benchmarks.experiment_config import ExperimentRunConfig, recipe_config
from pipeline.config import load_config
from pipeline.model.budgets import Budget

BUDGETS = {"L4-d128-p1": 4096, "L2-d32-p2": 256, "L1-d16-p4": 32}


def results(scores: dict, fingerprint: str) -> dict:
    return {"eval_fingerprint": fingerprint, "pages": 3, "queries": 3,
            "rows": [{"budget": b, "ndcg_at_5": v, "bytes_per_page": BUDGETS[b]} for b, v in scores.items()]}


def experiment(tmp_path, *overrides) -> qr.Experiment:
    cfg = load_config("configs/experiment.yaml", [f"experiment.out_dir={tmp_path}", *overrides],
                      root=ExperimentRunConfig)
    return qr.Experiment(cfg, tmp_path, tmp_path / "config.yaml", 1)


def finished_run(x: qr.Experiment, recipe: str, seed: int, val: float, test: float, stages=None) -> None:
    """A run directory as run_one leaves it (no weights: a finished run is not evaluated again)."""
    d = x.run_dir(recipe, seed)
    for split, base in (("validation", val), ("test", test)):
        (d / f"eval-{split}").mkdir(parents=True)
        scores = {b: base - 0.1 * i for i, b in enumerate(BUDGETS)}
        (d / f"eval-{split}" / "results.json").write_text(json.dumps(results(scores, split.upper())))
    stages = stages or {"train_s": 100.0, "eval_validation_s": 10.0, "eval_test_s": 20.0}
    (d / "wall.json").write_text(json.dumps({**stages, "threads": 1}))
    (d / "recipe.json").write_text(json.dumps({"recipe": recipe, "seed": seed,
                                               "overrides": x.cfg.experiment.recipes[recipe]}))


def no_subprocess(cmd, log_file, threads=None):
    raise AssertionError(f"a finished stage ran again: {cmd}")


def test_a_finished_run_is_reused_from_its_files(tmp_path, monkeypatch):
    x = experiment(tmp_path)
    finished_run(x, "truncation+lr3e-4", 0, 0.8, 0.7)
    monkeypatch.setattr(qr, "_run", no_subprocess)
    got = qr.run_one(x, "truncation+lr3e-4", 0)
    assert got["wall_s"] == pytest.approx(130.0) and got["recipe"] == "truncation+lr3e-4" and got["seed"] == 0
    assert got["validation"]["rows"][0]["ndcg_at_5"] == 0.8 and got["test"]["eval_fingerprint"] == "TEST"
    assert qr.is_done(x.run_dir("truncation+lr3e-4", 0)) and not qr.is_done(x.run_dir("truncation+lr3e-4", 1))


def test_reuse_survives_an_edited_config_with_a_warning(tmp_path, monkeypatch, caplog):
    x = experiment(tmp_path)
    finished_run(x, "distill+lr6e-4", 0, 0.8, 0.7)
    record = x.run_dir("distill+lr6e-4", 0) / "recipe.json"
    old = json.loads(record.read_text())
    record.write_text(json.dumps({**old, "overrides": ["data.chunk_size=32", *old["overrides"]]}))  # a renamed key
    monkeypatch.setattr(qr, "_run", no_subprocess)
    with caplog.at_level(logging.WARNING, logger="experiment"):
        assert qr.run_one(x, "distill+lr6e-4", 0)["test"]["rows"][0]["ndcg_at_5"] == 0.7
    assert "distill+lr6e-4-s0 was trained with" in caplog.text and "reusing it" in caplog.text
    assert "data.chunk_size=32" in record.read_text()  # the record of what was trained is kept


def test_only_the_missing_stage_runs(tmp_path, monkeypatch):
    x = experiment(tmp_path)
    finished_run(x, "distill+lr6e-4", 1, 0.8, 0.7, stages={"train_s": 100.0, "eval_validation_s": 10.0})
    calls = []

    def fake_evaluate(cmd, log_file, threads=None):
        calls.append(cmd)
        out = next(a.split("=", 1)[1] for a in cmd if a.startswith("eval.output_dir="))
        (tmp_path / out / "results.json").write_text(json.dumps(results({"L4-d128-p1": 0.5}, "TEST")))

    monkeypatch.setattr(qr, "_run", fake_evaluate)
    got = qr.run_one(x, "distill+lr6e-4", 1)
    assert len(calls) == 1 and calls[0][1:3] == ["-m", "pipeline.evaluate"]
    assert f"eval.shards={tmp_path / 'shards-test'}" in calls[0] and "eval.precisions=[fp16, int8, bin]" in calls[0]
    assert f"eval.model={x.run_dir('distill+lr6e-4', 1) / 'final'}" in calls[0]
    assert got["test"]["rows"] == [{"budget": "L4-d128-p1", "ndcg_at_5": 0.5, "bytes_per_page": 4096}]
    assert qr.is_done(x.run_dir("distill+lr6e-4", 1))
    monkeypatch.setattr(qr, "_run", no_subprocess)  # and now it is finished
    qr.run_one(x, "distill+lr6e-4", 1)


def test_a_failed_stage_is_not_recorded(tmp_path, monkeypatch):
    x = experiment(tmp_path)

    def fail(cmd, log_file, threads=None):
        raise RuntimeError("pipeline.train failed (1)")

    monkeypatch.setattr(qr, "_run", fail)
    with pytest.raises(RuntimeError, match="failed"):
        qr.run_one(x, "distill+lr6e-4", 2)
    assert not (x.run_dir("distill+lr6e-4", 2) / "wall.json").exists()


def test_share_last_head_gives_every_exit_the_last_head(tmp_path):
    src = tmp_path / "final"
    src.mkdir()
    heads = {f"{e}.weight": torch.full((2, 2), float(e)) for e in range(4)} | {"3.bias": torch.ones(2),
                                                                             "0.bias": torch.zeros(2)}
    save_file(heads, str(src / "heads.safetensors"))
    (src / "config.json").write_text("{}")
    dst = qr.share_last_head(src, tmp_path / "final-last-head")
    got = load_file(str(dst / "heads.safetensors"))
    assert set(got) == set(heads) and all(torch.equal(got[f"{e}.weight"], heads["3.weight"]) for e in range(4))
    assert torch.equal(got["0.bias"], heads["3.bias"]) and (dst / "config.json").exists()
    assert torch.equal(load_file(str(src / "heads.safetensors"))["0.weight"], heads["0.weight"])  # source untouched


def test_one_experiment_per_output_directory(tmp_path):
    held = qr.lock(tmp_path)
    with pytest.raises(qr.ExperimentBusy, match=rf"{tmp_path} is in use by another experiment \(pid \d+\)"):
        qr.lock(tmp_path)
    held.close()  # the holder ends: the directory is free again
    qr.lock(tmp_path).close()


def test_the_choice_is_automatic_per_role(tmp_path, monkeypatch):
    """Candidates run at the choice seed only; the one better on validation (its own criterion) runs at every seed."""
    x = experiment(tmp_path)
    val = {  # per recipe: validation (full, L2-d32-p2, L1-d16-p4); test is the reverse preference
        "distill+lr6e-4": (0.90, 0.6, 0.2), "distill+lr3e-4": (0.95, 0.5, 0.1),  # grid mean: lr6e-4
        "truncation+lr3e-4": (0.80, 0.9, 0.9), "truncation+lr6e-4": (0.85, 0.1, 0.1),  # full budget: lr6e-4
        "only-L2-d32-p2+lr3e-4": (0.1, 0.7, 0.1), "only-L2-d32-p2+lr6e-4": (0.9, 0.6, 0.9),  # own budget: lr3e-4
        "only-L1-d16-p4+lr3e-4": (0.1, 0.1, 0.3), "only-L1-d16-p4+lr6e-4": (0.1, 0.1, 0.4)}
    calls, guard = [], threading.Lock()

    def fake_run_one(x, recipe, seed):
        with guard:
            calls.append((recipe, seed))
        v = dict(zip(BUDGETS, val[recipe]))
        return {"recipe": recipe, "seed": seed, "wall_s": 1.0, "curve": {}, "validation": results(v, "VAL"),
                "test": results({b: 1 - s for b, s in v.items()}, "TEST")}

    monkeypatch.setattr(qe, "run_one", fake_run_one)
    roles = qe.run_all(x)
    chosen = {role: spec["runs"][0]["recipe"] for role, spec in roles.items()}
    assert chosen == {"default": "distill+lr6e-4", "truncation": "truncation+lr6e-4",
                      "only-L2-d32-p2": "only-L2-d32-p2+lr3e-4", "only-L1-d16-p4": "only-L1-d16-p4+lr6e-4"}
    trained = sorted(set(calls))
    assert trained == sorted({(r, 0) for r in val} | {(r, s) for r in chosen.values() for s in (1, 2)})
    assert roles["default"]["choice"]["validation"] == {"distill+lr6e-4": pytest.approx(0.5667, abs=1e-4),
                                                        "distill+lr3e-4": pytest.approx(0.5167, abs=1e-4)}
    assert [r["seed"] for r in roles["truncation"]["runs"]] == [0, 1, 2]
    assert list(roles["truncation"]["others"]) == ["truncation+lr3e-4"] and roles["only-L1-d16-p4"]["reported"] == [
        "L1-d16-p4"]


def test_chosen_recipe_from_the_files_waits_for_every_candidate(tmp_path):
    x = experiment(tmp_path)
    finished_run(x, "truncation+lr3e-4", 0, 0.8, 0.9)
    assert qr.chosen_recipe(x.cfg, tmp_path, "truncation") is None
    finished_run(x, "truncation+lr6e-4", 0, 0.85, 0.1)
    assert qr.chosen_recipe(x.cfg, tmp_path, "truncation") == "truncation+lr6e-4"  # validation, not test


def test_every_role_gets_the_same_lr_and_warmup_search():
    """configs/experiment.yaml: the baselines are tuned like the default (issue 22)."""
    cfg = load_config("configs/experiment.yaml", root=ExperimentRunConfig)
    e = cfg.experiment
    assert cfg.synth.page_size == 224 and set(e.role_candidates()) == {"default", "truncation", "only-L2-d32-p2",
                                                                       "only-L1-d16-p4"}
    for role, candidates in e.role_candidates().items():
        search = sorted((recipe_config(cfg, r).train.lr, recipe_config(cfg, r).train.warmup_steps) for r in candidates)
        assert search == [(3e-4, 50), (6e-4, 100)], role
    assert set(e.last_head_recipes) == set(e.roles["truncation"])
    assert recipe_config(cfg, "only-L1-d16-p4+lr6e-4").loss.only == Budget(1, 16, 4)
