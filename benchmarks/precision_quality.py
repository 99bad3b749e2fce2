"""The precision axis on trained models: how much nDCG@5 int8 and 1-bit page vectors keep of fp16, per budget.

    python -m benchmarks.precision_quality [--config configs/experiment.yaml] [key=value ...]   (after make experiment)

`python -m benchmarks.quality_experiment` evaluates every run on the test corpus at fp16, int8 and bin (pages
scored from their stored codes) into `<run>/eval-test/`. For the recipe each role of `experiment.precision_recipes`
reports (chosen on validation), this summary (`experiment.precision_results`, + .md) gives per budget the mean, std
and seed count, the retention of each precision against the same (layers, dim, pool) at fp16 (mean of the per-seed
ratios), and the issue's goals at (L/2, 32, pool 2): bin >= 95% at 1/16 of the bytes, int8 >= 99.5%.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from benchmarks.experiment_config import ExperimentRunConfig
from benchmarks.quality_experiment import git_commit, parse_experiment
from benchmarks.quality_runs import chosen_recipe, is_done
from benchmarks.quality_summary import cell
from pipeline.cli import Command
from pipeline.layout.run import RESULTS
from pipeline.model.budgets import Budget

log = logging.getLogger("precision")
CLI = Command("python -m benchmarks.precision_quality", __doc__.splitlines()[0], sections=("experiment",),
              root=ExperimentRunConfig)
GOALS = {"int8": 0.995, "bin": 0.95}


def summary(results: dict[str, list[dict]], commit: str) -> dict:
    """{"commit", "recipes": {name: {budget: {"mean", "std", "seeds"}}}, "retention": {name: {budget: {"mean",
    "std"}}} (quantised budgets only: per-seed nDCG@5 / the fp16 budget's; none where a seed's fp16 nDCG@5 is 0,
    as the ratio is undefined there), "bytes_per_page", "goals"}."""
    recipes, retention = {}, {}
    rows = next(iter(results.values()))[0]["rows"]
    order = [r["budget"] for r in rows]
    for name, runs in results.items():
        per_seed = [{r["budget"]: r["ndcg_at_5"] for r in res["rows"]} for res in runs]
        recipes[name] = {b: cell([s[b] for s in per_seed]) for b in order}
        retention[name] = {b: cell([s[b] / s[str(Budget.parse(b).fp16)] for s in per_seed])
                           for b in order if Budget.parse(b).precision != "fp16"
                           and all(s[str(Budget.parse(b).fp16)] > 0 for s in per_seed)}
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
                kept = f"{ret[q]['mean']:.1%}" if q in ret else "-"
                cells += [f"{sizes[q]:.0f}", f"{table[q]['mean']:.3f} ± {table[q]['std']:.3f} ({kept})"
                          ] if q in table else ["-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_experiment(CLI, argv)
    x = cfg.experiment
    out = Path(x.out_dir).resolve()
    results, missing, chosen = {}, [], {}
    for role in x.precision_recipes or [x.default_recipe]:
        recipe = chosen_recipe(cfg, out, role)
        if recipe is None:
            missing.append(f"{role} (candidates not finished)")
            continue
        chosen[role] = recipe
        for seed in x.seeds_of(role):
            run_dir = out / "runs" / f"{recipe}-s{seed}"
            if not is_done(run_dir):
                missing.append(run_dir.name)
                continue
            results.setdefault(role, []).append(json.loads((run_dir / "eval-test" / RESULTS).read_text()))
    if missing:
        log.warning("not finished yet (run `make experiment`): %s", ", ".join(missing))
    if not results:
        log.error("no finished run of %s under %s", ", ".join(x.precision_recipes or [x.default_recipe]), out)
        return 1
    result = {**summary(results, git_commit()), "split": "test", "page_size": cfg.synth.page_size, "roles": chosen}
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
