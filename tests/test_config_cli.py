"""The command lines: one flag table per verb (pinned here), dotted overrides anywhere among the flags, field
docstrings as --help, and a user error that costs one line and well under a second, before anything starts."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, parse

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"--config", "-h", "--help"}
SERVE = COMMON | {"--alias", "--model-uri", "--model", "--tracking-uri", "--engine", "--qdrant-url", "--index-dir"}
PINNED = {  # (module, verb): every option string the verb accepts
    ("pipeline.train.__main__", ""): COMMON | {"--output-dir", "--local_rank"},
    ("pipeline.evaluate.__main__", ""): COMMON | {"--model", "--shards", "--split", "--parquet", "--output-dir",
                                                  "--max-pages"},
    ("pipeline.export.__main__", ""): COMMON | {"--model", "--output-dir", "--results"},
    ("pipeline.promote", ""): COMMON | {"--alias", "--version", "--max-bytes-per-page", "--tolerance", "--dry-run",
                                        "--model", "--tracking-uri", "--list"},
    ("pipeline.serve.__main__", "index"): SERVE | {"--shards", "--split"},
    ("pipeline.serve.__main__", "search"): SERVE | {"--query", "-k"},
    ("pipeline.serve.__main__", "delete"): SERVE | {"--doc"},
    ("pipeline.serve.__main__", "verify"): SERVE,
    ("pipeline.serve.__main__", "http"): SERVE | {"--host", "--port"},
    ("data_prep.render", ""): COMMON | {"--input", "--output", "--queries"},
    ("data_prep.synth", ""): COMMON,
    ("demo.tiny", ""): COMMON | {"--out"},
    ("demo.__main__", ""): COMMON,
    ("benchmarks.quality_experiment", ""): COMMON,
    ("pipeline.plan.__main__", ""): COMMON | {"--nodes", "--gpus-per-node", "--gpu-memory-gib", "--peak-tflops",
                                              "--json"},
}
VERBS = [  # how each verb is run, and an argv prefix that selects the verb
    (["-m", "pipeline.train"], []), (["-m", "pipeline.evaluate"], []), (["-m", "pipeline.export"], []),
    (["-m", "pipeline.promote"], ["--alias", "a", "--version", "1"]), (["-m", "pipeline.serve"], ["index"]),
    (["-m", "pipeline.serve"], ["search"]), (["-m", "pipeline.serve"], ["http"]), (["data_prep/render.py"], []),
    (["data_prep/synth.py"], []), (["-m", "benchmarks.quality_experiment"], []), (["-m", "pipeline.plan"], []),
]


def flag_names(cli) -> dict[str, set[str]]:
    """{verb or "": every option string the command's table declares}."""
    common = {"--config", "-h", "--help"} | {n for f in cli.flags for n in f.names}
    if not cli.verbs:
        return {"": common}
    return {verb: common | {n for f in own for n in f.names} for verb, own in cli.verbs.items()}


def _cli(module: str):
    return __import__(module, fromlist=["CLI"]).CLI


def _accepted(parser: argparse.ArgumentParser, verb: str) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return _accepted(action.choices[verb], "")
    return {s for action in parser._actions for s in action.option_strings}


@pytest.mark.parametrize("module,verb", list(PINNED), ids=[f"{m}:{v}" for m, v in PINNED])
def test_flags_per_verb_are_pinned(module, verb):
    cli = _cli(module)
    assert flag_names(cli)[verb] == PINNED[(module, verb)]  # the table
    assert _accepted(build_parser(cli), verb) == PINNED[(module, verb)]  # what the parser really takes


def test_overrides_anywhere_among_the_flags():
    cli = _cli("pipeline.evaluate.__main__")
    cfg, _ = parse(cli, ["--model", "M", "eval.log_mlflow=false", "--split", "x", "train.steps=3"])
    assert (cfg.eval.model, cfg.eval.log_mlflow, cfg.eval.split, cfg.train.steps) == ("M", False, "x", 3)
    cfg, _ = parse(cli, ["eval.split=a", "--split", "b"])
    assert cfg.eval.split == "b"  # a flag wins over the same dotted key


def test_flag_values_keep_text_and_switches_and_repeats_work():
    cfg, ns = parse(_cli("pipeline.promote"), ["--alias", "yes", "--version", "3", "--dry-run", "--list"])
    assert cfg.promote.alias == "yes" and cfg.promote.version == 3 and cfg.promote.dry_run and ns.list
    cfg, ns = parse(_cli("pipeline.serve.__main__"), ["search", "--query", "a: b", "--query", "no", "-k", "2"])
    assert ns.verb == "search" and cfg.serve.queries == ["a: b", "no"] and cfg.serve.k == 2


def test_help_shows_field_docs_and_keys(capsys):
    with pytest.raises(SystemExit):
        parse(_cli("pipeline.train.__main__"), ["--help"])
    out = capsys.readouterr().out
    assert "Checkpoints, final/, run.json" in out  # --output-dir's help is train.output_dir's docstring
    assert "train.steps (int >= 1; default 100)" in out and "Optimizer steps to train" in out
    assert "loss.budgets (grid|2d|full|diagonal|only; default 'grid')" in out
    assert "train.dist_timeout_s" in out and "--local_rank" not in out


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an entry point with torch, DeepSpeed, transformers, Ray and MLflow unimportable: a refusal that
    comes before anything heavy starts is one line; one that comes later is an ImportError traceback."""
    return subprocess.run([sys.executable, str(ROOT / "tests" / "helpers" / "light_run.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("cmd,prefix", VERBS, ids=[" ".join(c + p) for c, p in VERBS])
def test_user_error_is_one_line_before_anything_heavy_is_imported(cmd, prefix):
    bad = _run([*cmd, *prefix, "--config", "configs/tiny.yaml", "loss.budgets=foo"])
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.endswith(
        "config error: loss.budgets: 'foo' is not one of 'grid', '2d', 'full', 'diagonal', 'only'\n"), bad.stderr
    flag = _run([*cmd, *prefix, "--nope"])
    assert flag.returncode == 2 and flag.stderr.count("\n") == 1 and "unrecognized arguments: --nope" in flag.stderr


def test_the_guard_catches_a_command_that_gets_as_far_as_torch(tmp_path):
    """The negative control of the tests above: a valid config gets past parsing, and the first heavy import fails."""
    res = _run(["-m", "pipeline.evaluate", "--config", "configs/tiny.yaml", f"eval.output_dir={tmp_path}"])
    assert res.returncode != 0 and "import of torch halted" in res.stderr


def test_missing_and_broken_files_are_one_line(tmp_path):
    res = _run(["-m", "pipeline.train", "--config", str(tmp_path / "nope.yaml")])
    assert res.returncode == 2 and res.stderr == (f"python -m pipeline.train: config error: {tmp_path / 'nope.yaml'}: "
                                                   "no such config file\n")
    (tmp_path / "bad.yaml").write_text("train:\n  steps: [1\n")
    res = _run(["-m", "pipeline.export", "--config", str(tmp_path / "bad.yaml")])
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and f"{tmp_path / 'bad.yaml'}:3:" in res.stderr


def test_training_launch_checks_before_anything_starts(tmp_path):
    out = tmp_path / "run"
    env = {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}
    res = _run(["-m", "pipeline.train", "--config", "configs/tiny.yaml", f"train.output_dir={out}"], env)
    assert res.returncode == 2 and res.stderr == ("python -m pipeline.train: config error: data.global_batch 16 does "
                                                  "not split over 3 ranks\n")
    assert not out.exists()  # nothing was created
    res = _run(["-m", "pipeline.train", "--config", "configs/tiny.yaml", f"data.shards={tmp_path}",
                   f"train.output_dir={out}"])
    assert res.returncode == 2 and res.stderr.endswith(f"data.shards: no manifest.json in {tmp_path} (run the "
                                                       "render job first)\n") and not out.exists()
