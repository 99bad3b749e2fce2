"""The quality experiment: does joint width x depth x count training beat truncating a full-budget model?

    python -m benchmarks.quality_experiment [--config configs/experiment.yaml] [key=value ...]   (make experiment)

Every run goes through the real path: synthetic PDFs -> the render job -> `python -m pipeline.train`
(DeepSpeed ZeRO-3, gradient cache, MLflow) -> `python -m pipeline.evaluate` over the whole budget grid, once on
a validation corpus and once on a test corpus (other seeds). Each role's candidate recipes run at
`experiment.choice_seeds`; the one best on validation runs at the role's seeds. The summary (test numbers, a
validation block, the choices and the goals) goes to `experiment.results` (+ .md, _pareto.png, _curves.png).
Finished runs are reused from their run directories (benchmarks/quality_runs.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from benchmarks.experiment_config import (ExperimentConfig, ExperimentRunConfig, recipe_config,  # noqa: F401
                                          reported_budgets, run_config, trained_budgets)
from benchmarks.quality_plots import plot_curves, plot_pareto
from benchmarks.quality_runs import Experiment, ExperimentBusy, lock, make_models, prepare, run_one
from pipeline.cli import Command, parse_cli
from pipeline.config import save_config
from pipeline.logs import setup_logging

log = logging.getLogger("experiment")
CLI = Command("python -m benchmarks.quality_experiment", __doc__.splitlines()[0],
              sections=("experiment",), root=ExperimentRunConfig)


def parse_experiment(command: Command, argv: list[str] | None) -> ExperimentRunConfig:
    """The experiment's config from a command line (configs/experiment.yaml unless --config is given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", "configs/experiment.yaml", *argv]
    cfg = parse_cli(command, argv)
    setup_logging()
    return cfg


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def run_role(x: Experiment, runs: Executor, role: str) -> dict:
    """A role's runs: every candidate at the choice seeds, the choice on validation, the chosen one at the role's
    seeds (its choice-seed runs reused). Returns summary()'s role entry."""
    from benchmarks.quality_summary import choose  # torch (budgets): not at import, so the CLI fails fast

    e = x.cfg.experiment
    candidates = e.role_candidates()[role]
    choice, others = None, {}
    chosen = candidates[0]
    if len(candidates) > 1:
        first = {r: [runs.submit(run_one, x, r, s) for s in e.choice_seeds] for r in candidates}
        done = {r: [f.result() for f in fs] for r, fs in first.items()}
        choice = choose({r: [res["validation"] for res in rs] for r, rs in done.items()},
                        trained_budgets(x.cfg, candidates[0]))
        chosen = choice["recipe"]
        others = {r: rs for r, rs in done.items() if r != chosen}
        log.info("%s: %s chosen on validation (%s)", role, chosen, choice["validation"])
    final = [f.result() for f in [runs.submit(run_one, x, chosen, s) for s in e.seeds_of(role)]]
    return {"runs": final, "reported": reported_budgets(x.cfg, role), "choice": choice, "others": others}


def run_all(x: Experiment) -> dict[str, dict]:
    """Every role, at most `experiment.parallel` runs at once; a role's later seeds start as soon as its choice is
    made. Runs that fail raise after the others have finished (and are reused on the next start)."""
    e = x.cfg.experiment
    roles = e.role_candidates()
    with ThreadPoolExecutor(e.parallel) as runs, ThreadPoolExecutor(len(roles)) as coordinators:
        futures = {role: coordinators.submit(run_role, x, runs, role) for role in roles}
        return {role: f.result() for role, f in futures.items()}


def write_outputs(result: dict, roles: dict[str, dict], target: Path) -> str:
    """The JSON, the table, both plots; returns the table."""
    from benchmarks.quality_summary import markdown

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    target.with_suffix(".md").write_text(table + "\n")
    plot_pareto(result, target.with_name(target.stem + "_pareto.png"))
    plot_curves({role: spec["runs"] for role, spec in roles.items()}, target.with_name(target.stem + "_curves.png"))
    return table


def main(argv: list[str] | None = None) -> int:
    cfg = parse_experiment(CLI, argv)
    e = cfg.experiment
    out = Path(e.out_dir).resolve()
    try:
        held = lock(out)  # noqa: F841 (held until the process exits)
    except ExperimentBusy as err:
        log.error("%s", err)
        return 1
    x = Experiment(cfg, out, out / "config.yaml", e.threads or max(1, (os.cpu_count() or 2) // e.parallel))
    save_config(run_config(cfg), x.config)
    prepare(x)
    make_models(x, {s for role in e.role_candidates() for s in [*e.seeds_of(role), *e.choice_seeds]})
    from mlflow import MlflowClient

    MlflowClient(cfg.tracking.tracking_uri).search_experiments()  # create the SQLite store once, not in a race
    roles = run_all(x)
    from benchmarks.quality_summary import summary

    result = summary(roles, {"commit": git_commit(), "page_size": cfg.synth.page_size,
                             "default_recipe": e.default_recipe, "baseline": e.baseline})
    target = Path(e.results)
    print(write_outputs(result, roles, target))
    print(f"\nresults: {target} (+ .md, _pareto.png, _curves.png)  MLflow: {cfg.tracking.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
