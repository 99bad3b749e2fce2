"""The quality experiment's runs: three corpora, one training run per (recipe, seed), each evaluated once on the
validation corpus and once on the test corpus; every stage is reused from the files it left in its run directory.

    <out_dir>/
      shards-train/ shards-validation/ shards-test/     the render job's output (reused when manifest.json exists)
      models/tiny-s<seed>/                              the seed's random initialisation
      runs/<recipe>-s<seed>/
        recipe.json                                     the recipe's overrides and seed when it was trained
        wall.json                                       {"train_s", "eval_validation_s", "eval_test_s", "threads"}:
                                                        a stage is done when its key is here
        final/ (final-last-head/)                       the trained weights (every exit given the last head)
        eval-validation/results.json                    the fp16 grid on the validation corpus
        eval-test/results.json                          the grid at every precision on the test corpus

Reuse keys on these files only, never on the config tree, so a refactor of the config does not retrain anything.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.experiment_config import ExperimentRunConfig
from benchmarks.resumed_walls import resumed_train_s
from pipeline.layout.files import atomic_write
from pipeline.layout.run import RESULTS, RunPaths

log = logging.getLogger("experiment")
PY = sys.executable
SPLITS = ("validation", "test")
ALL_PRECISIONS = "[fp16, int8, bin]"


class ExperimentBusy(RuntimeError):
    """Another experiment process holds the output directory."""


@dataclass(frozen=True)
class Experiment:
    """What every run needs: the config, the output directory, the config file the stages read, threads per run."""

    cfg: ExperimentRunConfig
    out: Path
    config: Path
    threads: int

    def shards(self, split: str) -> Path:
        return self.out / f"shards-{split}"

    def run_dir(self, recipe: str, seed: int) -> Path:
        return self.out / "runs" / f"{recipe}-s{seed}"


def lock(out: Path):
    """Hold `<out>/experiment.lock` for the life of the process (the OS drops it when the process dies); a second
    experiment on the same directory would train the same runs twice."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / "experiment.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise ExperimentBusy(f"{out} is in use by another experiment (pid {f.read().strip() or '?'}): wait for it "
                             "to finish, or use another experiment.out_dir") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def _run(cmd: list[str], log_file: Path, threads: int | None = None) -> None:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_file, "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({res.returncode}); see {log_file}")


def prepare(x: Experiment) -> None:
    """Synthesise and render the training corpus and the validation and test corpora (other seeds, fewer documents,
    every page with an answer code found on no other page of its corpus)."""
    e = x.cfg.experiment
    held_out = [f"synth.n_docs={e.eval_docs}", "synth.unique_codes=true"]
    corpora = {  # split -> (synth overrides, render overrides)
        "train": ([], ["render.eval_fraction=0.0"]),
        "validation": ([*held_out, f"synth.seed={e.validation_seed}"], ["render.eval_fraction=1.0"]),
        "test": ([*held_out, f"synth.seed={e.test_seed}"], ["render.eval_fraction=1.0"]),
    }
    conf = ["--config", str(x.config)]
    for split, (synth, render) in corpora.items():
        shards, corpus = x.shards(split), x.out / f"corpus-{split}"
        if (shards / "manifest.json").exists():
            continue
        _run([PY, "data_prep/synth.py", *conf, f"synth.out_dir={corpus}", *synth], x.out / f"{shards.name}.synth.log")
        _run([PY, "data_prep/render.py", *conf, "--input", str(corpus), "--output", str(shards), *render],
             x.out / f"{shards.name}.render.log")


def make_models(x: Experiment, seeds: set[int]) -> None:
    """Each seed's random initialisation (codes are single tokens), made once before runs start in parallel."""
    for seed in sorted(seeds):
        model_dir = x.out / "models" / f"tiny-s{seed}"
        if not (model_dir / "config.json").exists():
            _run([PY, "-m", "demo.tiny", "--config", str(x.config), "--out", str(model_dir),
                  f"train.seed={seed}"], x.out / f"tiny-s{seed}.log")


def share_last_head(src: Path, dst: Path) -> Path:
    """Copy a saved retriever, giving every exit the last exit's trained head: the honest truncation baseline
    for depth (a full-budget-only run trains no other head)."""
    from safetensors.torch import load_file, save_file

    if dst.exists():
        shutil.rmtree(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    heads = load_file(str(src / "heads.safetensors"))
    last = max(int(k.split(".")[0]) for k in heads)
    save_file({k: heads[f"{last}.{k.split('.', 1)[1]}"].clone() for k in heads}, str(tmp / "heads.safetensors"))
    tmp.rename(dst)
    return dst


def _record_recipe(x: Experiment, run_dir: Path, recipe: str, seed: int) -> None:
    """Write recipe.json on the first start; on reuse, warn (not refuse) when the recipe's overrides were edited
    since, as a renamed config key would also show up here."""
    record = {"recipe": recipe, "seed": seed, "overrides": x.cfg.experiment.recipes[recipe]}
    path = run_dir / "recipe.json"
    if not path.exists():
        atomic_write(path, json.dumps(record, indent=1))
    elif json.loads(path.read_text()) != record:
        log.warning("%s was trained with %s; the config now says %s: reusing it", run_dir.name,
                    path.read_text().strip(), record)


def _stage(wall_file: Path, key: str, threads: int, work) -> None:
    """Run `work()` unless wall.json records `key`; then record its wall time there."""
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    if key in wall:
        return
    began = time.time()
    work()
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    atomic_write(wall_file, json.dumps({**wall, key: time.time() - began, "threads": threads}))


def run_one(x: Experiment, recipe: str, seed: int) -> dict:
    """Train one recipe at one seed (the learning curve on the validation corpus every train.eval_every steps) and
    evaluate it on both held-out corpora; returns {"recipe", "seed", "validation", "test" (results.json dicts),
    "wall_s", "resumed_s", "curve"}."""
    run_dir = x.run_dir(recipe, seed)
    wall_file = run_dir / "wall.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    _record_recipe(x, run_dir, recipe, seed)
    model_dir = x.out / "models" / f"tiny-s{seed}"
    common = ["--config", str(x.config), f"model.name_or_path={model_dir}", f"train.output_dir={run_dir}",
              f"tracking.run_name={recipe}-s{seed}"]
    train = [PY, "-m", "pipeline.train", *common, f"data.shards={x.shards('train')}", f"train.seed={seed}",
             f"data.seed={seed}", f"eval.shards={x.shards('validation')}", *x.cfg.experiment.recipes[recipe]]
    _stage(wall_file, "train_s", x.threads, lambda: _run(train, run_dir / "train.log", x.threads))
    for split in SPLITS:  # validation at fp16 (choices); test at every precision (tables, goals), logged to MLflow
        extra = ["eval.log_mlflow=false"] if split == "validation" else [f"eval.precisions={ALL_PRECISIONS}"]
        _stage(wall_file, f"eval_{split}_s", x.threads, lambda split=split, extra=extra: _run(
            [PY, "-m", "pipeline.evaluate", *common, f"eval.model={evaluated_model(x, run_dir, recipe)}",
             f"eval.shards={x.shards(split)}", f"eval.output_dir={run_dir / f'eval-{split}'}", *extra],
            run_dir / f"eval-{split}.log", x.threads))
    return load_run(run_dir, recipe, seed)


def evaluated_model(x: Experiment, run_dir: Path, recipe: str) -> Path:
    """The weights a run is evaluated with: final/, or for a last-head recipe a copy with the last head at every
    exit (made once)."""
    final = RunPaths(run_dir).final
    if recipe not in x.cfg.experiment.last_head_recipes:
        return final
    shared = run_dir / "final-last-head"
    return shared if shared.is_dir() else share_last_head(final, shared)


def load_run(run_dir: Path, recipe: str, seed: int) -> dict:
    """A finished run's results from its files (what run_one returns). "wall_s": every stage's recorded wall time
    plus "resumed_s", the training before the last start (benchmarks/resumed_walls.py; None: unknown, then wall_s
    counts the last start only)."""
    wall = json.loads((run_dir / "wall.json").read_text())
    resumed = resumed_train_s(run_dir, wall["train_s"])
    res = {"recipe": recipe, "seed": seed, "curve": read_curve(RunPaths(run_dir).metrics), "resumed_s": resumed,
           "wall_s": sum(v for k, v in wall.items() if k.endswith("_s")) + (resumed or 0.0)}
    for split in SPLITS:
        res[split] = json.loads((run_dir / f"eval-{split}" / RESULTS).read_text())
    log.info("%s seed %d: %.0f s wall (%s s before its last start)", recipe, seed, res["wall_s"],
             "?" if resumed is None else f"{resumed:.0f}")
    return res


def is_done(run_dir: Path) -> bool:
    """Whether a run finished every stage (its files say so)."""
    wall = run_dir / "wall.json"
    return wall.exists() and {"train_s", "eval_validation_s", "eval_test_s"} <= set(json.loads(wall.read_text()))


def read_curve(metrics: Path) -> dict[str, list[tuple[int, float]]]:
    """{budget: [(step, nDCG@5), ...]} from a run's metrics.jsonl (the last record of a step wins, as on resume)."""
    points: dict[str, dict[int, float]] = {}
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            for key, value in row.items():
                if key.startswith("ndcg_at_5/"):
                    points.setdefault(key.split("/", 1)[1], {})[row["step"]] = value
    return {b: sorted(p.items()) for b, p in points.items()}


def chosen_recipe(cfg: ExperimentRunConfig, out: Path, role: str) -> str | None:
    """The recipe a role reports, from the finished candidates' validation results on disk (as the experiment
    chose it); None while a candidate has not finished."""
    from benchmarks.experiment_config import trained_budgets
    from benchmarks.quality_summary import choose

    e = cfg.experiment
    candidates = e.role_candidates()[role]
    if len(candidates) == 1:
        return candidates[0]
    dirs = {r: [out / "runs" / f"{r}-s{s}" for s in e.choice_seeds] for r in candidates}
    if not all(is_done(d) for ds in dirs.values() for d in ds):
        return None
    validation = {r: [json.loads((d / "eval-validation" / RESULTS).read_text()) for d in ds] for r, ds in dirs.items()}
    return choose(validation, trained_budgets(cfg, candidates[0]))["recipe"]
