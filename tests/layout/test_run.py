"""The run directory's paths are spelled in pipeline/layout/run.py only: every later stage's default comes from
StagePaths.from_config, and explicit settings win."""

from pathlib import Path

from pipeline.config import Config
from pipeline.layout.run import RunPaths, StagePaths


def test_defaults_come_from_the_run_directory():
    cfg = Config()
    cfg.train.output_dir = "out/run"
    p = StagePaths.from_config(cfg)
    run = RunPaths(Path("out/run"))
    assert p.run == run
    assert (p.eval_model, p.export_model) == (run.final, run.final) == (Path("out/run/final"),) * 2
    assert p.eval_dir == Path("out/run/eval") and p.results == Path("out/run/eval/results.json")
    assert p.variants == Path("out/run/variants")
    assert p.eval_shards == p.serve_shards == cfg.data.shards
    assert (run.checkpoints, run.run_json, run.metrics, run.resolved_config) == (
        Path("out/run/checkpoints"), Path("out/run/run.json"), Path("out/run/metrics.jsonl"),
        Path("out/run/resolved_config.yaml"))


def test_explicit_settings_win():
    cfg = Config()
    cfg.eval.model, cfg.eval.output_dir, cfg.eval.shards = "m", "e", "es"
    cfg.export.model, cfg.export.output_dir, cfg.export.results = "xm", "v", "r.json"
    cfg.serve.shards = "ss"
    p = StagePaths.from_config(cfg)
    assert (p.eval_model, p.eval_dir, p.eval_shards) == (Path("m"), Path("e"), "es")
    assert (p.export_model, p.variants, p.results, p.serve_shards) == (Path("xm"), Path("v"), Path("r.json"), "ss")
    cfg.export.results = None
    assert StagePaths.from_config(cfg).results == Path("e/results.json")  # export reads where evaluate wrote


def test_run_json_round_trips(tmp_path):
    run = RunPaths(tmp_path)
    assert run.read_run_json() is None
    run.write_run_json({"mlflow_run_id": "x", "steps": 3})
    assert run.read_run_json() == {"mlflow_run_id": "x", "steps": 3}
