"""The precision axis on trained models: how much nDCG@5 int8 and 1-bit page vectors keep of fp16, per budget.

    python -m benchmarks.precision_quality [--config configs/experiment.yaml] [key=value ...]   (after make experiment)

For every finished run of `experiment.precision_recipes` (trained by `python -m benchmarks.quality_experiment`),
`python -m pipeline.evaluate` scores the whole grid at fp16, int8 and bin (pages scored from their stored codes)
into `<run>/eval-precision/`. The summary (`experiment.precision_results`, + .md) gives per recipe and budget the
mean, std and seed count, the retention of each precision against the same (layers, dim, pool) at fp16 (mean of
the per-seed ratios), and the issue's goals at (L/2, 32, pool 2): bin >= 95% at 1/16 of the bytes, int8 >= 99.5%.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from benchmarks.quality_experiment import (PY, ExperimentRunConfig, _run, cell, git_commit, parse_experiment,
                                          run_config)
from pipeline.cli import Command
from pipeline.config import save_config
from pipeline.layout.run import RESULTS, RunPaths
from pipeline.model.budgets import Budget

log = logging.getLogger("precision")
CLI = Command("python -m benchmarks.precision_quality", __doc__.splitlines()[0], sections=("experiment",),
              root=ExperimentRunConfig)
GOALS = {"int8": 0.995, "bin": 0.95}


def evaluate_run(config: Path, out: Path, run_dir: Path, threads: int) -> dict:
    """The run's final model evaluated at every precision (reused when done); returns its results."""
    target = run_dir / "eval-precision"
    if not (target / RESULTS).exists():
        final = RunPaths(run_dir).final
        _run([PY, "-m", "pipeline.evaluate", "--config", str(config), f"eval.model={final}",
              f"train.output_dir={run_dir}", f"eval.shards={out / 'shards-eval'}", f"eval.output_dir={target}",
              "eval.precisions=[fp16, int8, bin]", "eval.log_mlflow=false", "eval.timing_pages=0"],
             run_dir / "eval-precision.log", threads)
    return json.loads((target / RESULTS).read_text())


def summary(results: dict[str, list[dict]], commit: str) -> dict:
    """{"commit", "recipes": {name: {budget: {"mean", "std", "seeds"}}}, "retention": {name: {budget: {"mean",
    "std"}}} (quantised budgets only: per-seed nDCG@5 / the fp16 budget's), "bytes_per_page", "goals"}."""
    recipes, retention = {}, {}
    rows = next(iter(results.values()))[0]["rows"]
    order = [r["budget"] for r in rows]
    for name, runs in results.items():
        per_seed = [{r["budget"]: r["ndcg_at_5"] for r in res["rows"]} for res in runs]
        recipes[name] = {b: cell([s[b] for s in per_seed]) for b in order}
        retention[name] = {b: cell([s[b] / s[str(Budget.parse(b).fp16)] for s in per_seed])
                           for b in order if Budget.parse(b).precision != "fp16"}
    sizes = {r["budget"]: r["bytes_per_page"] for r in rows}
    result = {"commit": commit, "recipes": recipes, "retention": retention, "bytes_per_page": sizes}
    result["goals"] = goals(result)
    return result


def goals(result: dict) -> dict[str, bool]:
    """Per recipe, at (L/2, 32, pool 2): each precision's retention >= its goal (bin also at <= 1/16 the bytes)."""
    sizes = result["bytes_per_page"]
    layers = max(Budget.parse(b).layers for b in sizes)
    base = Budget(layers // 2, 32, 2)
    out = {}
    for name, table in result["retention"].items():
        for precision, goal in GOALS.items():
            b = str(Budget(base.layers, base.dim, base.pool, precision))
            if b in table:
                ok = table[b]["mean"] >= goal and (precision != "bin" or sizes[b] * 16 <= sizes[str(base)])
                out[f"{name}:{b}_keeps_{goal:.1%}"] = ok
    return out


def markdown(result: dict) -> str:
    """Per (layers, dim, pool): bytes and nDCG@5 at each precision, and the retention of int8 and bin."""
    sizes = result["bytes_per_page"]
    lines = []
    for name, table in result["recipes"].items():
        ret = result["retention"][name]
        seeds = next(iter(table.values()))["seeds"]
        lines += [f"### {name} (n={seeds})", "",
                  "| budget | fp16 bytes | fp16 nDCG@5 | int8 bytes | int8 nDCG@5 (kept) | bin bytes | bin nDCG@5 (kept) |",
                  "|---|---|---|---|---|---|---|"]
        for b in [b for b in table if Budget.parse(b).precision == "fp16"]:
            cells = [b, f"{sizes[b]:.0f}", f"{table[b]['mean']:.3f} ± {table[b]['std']:.3f}"]
            for precision in ("int8", "bin"):
                q = f"{b}-{precision}"
                cells += [f"{sizes[q]:.0f}", f"{table[q]['mean']:.3f} ± {table[q]['std']:.3f} "
                                             f"({ret[q]['mean']:.1%})"] if q in table else ["-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_experiment(CLI, argv)
    x = cfg.experiment
    out = Path(x.out_dir).resolve()
    threads = x.threads or 1
    config = out / "config.precision.yaml"  # this command's own copy: an experiment may be running on config.yaml
    save_config(run_config(cfg), config)
    results, missing = {}, []
    recipes = x.precision_recipes or [x.default_recipe]
    for recipe in recipes:
        for seed in x.seeds_of(recipe):
            run_dir = out / "runs" / f"{recipe}-s{seed}"
            if not RunPaths(run_dir).final.is_dir():
                missing.append(run_dir.name)
                continue
            results.setdefault(recipe, []).append(evaluate_run(config, out, run_dir, threads))
            log.info("%s seed %d evaluated at every precision", recipe, seed)
    if missing:
        log.warning("not trained yet (run `make experiment`): %s", ", ".join(missing))
    if not results:
        log.error("no finished run of %s under %s", ", ".join(recipes), out)
        return 1
    result = summary(results, git_commit())
    target = Path(x.precision_results)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    target.with_suffix(".md").write_text(table + "\n")
    print(table)
    print("\n".join(f"goal {name}: {'met' if ok else 'MISSED'}" for name, ok in result["goals"].items()))
    print(f"\nresults: {target} (+ .md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
