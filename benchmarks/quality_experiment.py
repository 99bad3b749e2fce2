"""The quality experiment: does joint width x depth x count training beat truncating a full-budget model?

    python -m benchmarks.quality_experiment [--config configs/experiment.yaml] [key=value ...]   (make experiment)

Every run goes through the real path: synthetic PDFs -> the render job -> `python -m pipeline.train`
(DeepSpeed ZeRO-3, gradient cache, MLflow) -> `python -m pipeline.evaluate` over the whole budget grid.
Recipes and seeds come from the `experiment` config section; results land in
`<experiment.out_dir>/summary.md`, `summary.json` and `pareto.png`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import Field, model_validator

from pipeline.cli import Command, RunConfig, parse_cli
from pipeline.config import save_config
from pipeline.configlib import FieldError, PosInt, Section
from pipeline.layout.run import RESULTS, RunPaths
from pipeline.logs import setup_logging

log = logging.getLogger("experiment")
PY = sys.executable


class ExperimentConfig(Section):
    """The quality experiment: recipes x seeds through the real training path."""

    out_dir: str = "experiment_out"
    """Everything the experiment writes (corpora, shards, runs, summary)."""
    seeds: list[int] = [0, 1, 2]
    """Seeds of each recipe (model init, data order)."""
    recipes: dict[str, list[str]] = {
        "truncation": ["loss.budgets=full"],
        "diagonal": ["loss.budgets=diagonal", "loss.sample_k=2"],
        "3d-sampled": ["loss.budgets=grid", "loss.sample_k=6"],
        "only-L2-d32-p2": ["loss.budgets=only", "loss.only=L2-d32-p2"],
        "only-L1-d16-p4": ["loss.budgets=only", "loss.only=L1-d16-p4"],
    }
    """name -> dotted overrides of the run config. A recipe with loss.budgets=only is a separately trained model:
    it is reported at its own budget only."""
    recipe_seeds: dict[str, list[int]] = {}
    """Seeds of a recipe when not `seeds` (ablations may run fewer; every table says how many)."""
    default_recipe: str = "diagonal"
    """The recipe the configs ship (the goal is checked on it)."""
    baseline: str = "truncation"
    """The recipe the others are compared with."""
    results: str = "benchmarks/results/quality_experiment.json"
    """The machine-checked summary (per recipe and budget: mean, std, seeds), from which the table and plots are made."""
    last_head_recipes: list[str] = ["truncation"]
    """Recipes evaluated with the last head at every exit."""
    eval_docs: PosInt = 67
    """Held-out documents of a separate corpus (unique answer codes)."""
    parallel: PosInt = 2
    """Runs at once (each a single-rank DeepSpeed process)."""
    threads: PosInt | None = None
    """Torch threads per run (default: the machine's cores / parallel)."""
    precision_recipes: list[str] = []
    """Recipes whose runs `python -m benchmarks.precision_quality` also evaluates at every page-vector precision
    (empty: the default recipe)."""
    precision_results: str = "benchmarks/results/precision_quality.json"
    """The precision summary (per recipe and budget with precision: mean, std, seeds; retention; goals)."""

    @model_validator(mode="after")
    def check(self):
        if not self.seeds or not self.recipes:
            raise FieldError("seeds" if not self.seeds else "recipes", "must not be empty")
        for key in ("last_head_recipes", "recipe_seeds", "default_recipe", "baseline", "precision_recipes"):
            names = getattr(self, key)
            unknown = [r for r in ([names] if isinstance(names, str) else names) if r not in self.recipes]
            if unknown:
                raise FieldError(key, f"{unknown} are not recipes ({', '.join(self.recipes)})")
        return self

    def seeds_of(self, recipe: str) -> list[int]:
        return self.recipe_seeds.get(recipe, self.seeds)


class ExperimentRunConfig(RunConfig):
    """The pipeline's tree plus the experiment's own section."""

    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)

    @model_validator(mode="after")
    def check_recipes(self):
        for name in self.experiment.recipes:  # each recipe must give a valid run config
            try:
                recipe_config(self, name)
            except ValueError as e:
                raise FieldError(f"experiment.recipes.{name}", str(e)) from None
        return self


def recipe_config(cfg: ExperimentRunConfig, recipe: str) -> RunConfig:
    """The run config of one recipe: the pipeline's tree with the recipe's overrides applied and checked."""
    from pipeline.configlib import apply_override, build

    tree = run_config(cfg).model_dump()
    for item in cfg.experiment.recipes[recipe]:
        apply_override(tree, item)
    return build(RunConfig, tree)


def reported_budgets(cfg: ExperimentRunConfig, recipe: str) -> set[str] | None:
    """The budgets a recipe is reported at: its own for a separately trained model, else None (every budget)."""
    loss = recipe_config(cfg, recipe).loss
    return {str(loss.only)} if loss.budgets == "only" else None


CLI = Command("python -m benchmarks.quality_experiment", __doc__.splitlines()[0],
              sections=("experiment",), root=ExperimentRunConfig)


def run_config(cfg: ExperimentRunConfig) -> RunConfig:
    """The run's part of the tree (what each stage's command reads)."""
    return RunConfig(**{name: getattr(cfg, name) for name in RunConfig.model_fields})


def _run(cmd: list[str], log_file: Path, threads: int | None = None) -> None:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_file, "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({res.returncode}); see {log_file}")


def prepare(cfg: RunConfig, out: Path) -> tuple[Path, Path]:
    """Synthesise and render the training corpus and the held-out eval corpus; returns their shard dirs."""
    train_shards, eval_shards = out / "shards-train", out / "shards-eval"
    corpora = [  # (corpus dir, shard dir, synth overrides, render overrides)
        (out / "corpus-train", train_shards, [], ["render.eval_fraction=0.0"]),
        (out / "corpus-eval", eval_shards, [f"synth.n_docs={cfg.experiment.eval_docs}", "synth.seed=1",
                                            "synth.unique_codes=true"], ["render.eval_fraction=1.0"]),
    ]
    conf = ["--config", str(out / "config.yaml")]
    for corpus, shards, synth, render in corpora:
        if (shards / "manifest.json").exists():
            continue
        _run([PY, "data_prep/synth.py", *conf, f"synth.out_dir={corpus}", *synth], out / f"{shards.name}.synth.log")
        _run([PY, "data_prep/render.py", *conf, "--input", str(corpus), "--output", str(shards), *render],
             out / f"{shards.name}.render.log")
    return train_shards, eval_shards


def share_last_head(src: Path, dst: Path) -> Path:
    """Copy a saved retriever, giving every exit the last exit's trained head: the honest truncation baseline
    for depth (a full-budget-only run trains no other head)."""
    import shutil

    from safetensors.torch import load_file, save_file

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    heads = load_file(str(src / "heads.safetensors"))
    last = max(int(k.split(".")[0]) for k in heads)
    save_file({k: heads[f"{last}.{k.split('.', 1)[1]}"].clone() for k in heads}, str(dst / "heads.safetensors"))
    return dst


def run_one(cfg: ExperimentRunConfig, out: Path, recipe: str, seed: int, shards: tuple[Path, Path]) -> dict:
    """Build the seed's random model, train one recipe (the learning curve on the eval set every
    train.eval_every steps), evaluate the grid; returns the eval results plus the run's "wall_s" and "curve"."""
    run_dir = out / "runs" / f"{recipe}-s{seed}"
    paths = RunPaths(run_dir)
    results, wall = paths.eval_dir / RESULTS, run_dir / "wall.json"
    if not results.exists():
        began = time.time()
        run_dir.mkdir(parents=True, exist_ok=True)
        model_dir = out / "models" / f"tiny-s{seed}"
        if not (model_dir / "config.json").exists():  # random init, the seed's own; codes are single tokens
            _run([PY, "-m", "demo.tiny", "--config", str(out / "config.yaml"), "--out", str(model_dir),
                  f"train.seed={seed}"], out / f"tiny-s{seed}.log")
        common = ["--config", str(out / "config.yaml"), f"model.name_or_path={model_dir}",
                  f"train.output_dir={run_dir}", f"tracking.run_name={recipe}-s{seed}", f"eval.shards={shards[1]}"]
        threads = cfg.experiment.threads or max(1, (os.cpu_count() or 2) // cfg.experiment.parallel)
        _run([PY, "-m", "pipeline.train", *common, f"data.shards={shards[0]}", f"train.seed={seed}",
              f"data.seed={seed}", *cfg.experiment.recipes[recipe]], run_dir / "train.log", threads)
        evaluated = paths.final
        if recipe in cfg.experiment.last_head_recipes:
            evaluated = share_last_head(evaluated, run_dir / "final-last-head")
        _run([PY, "-m", "pipeline.evaluate", *common, f"eval.model={evaluated}"], run_dir / "eval.log", threads)
        wall.write_text(json.dumps({"wall_s": time.time() - began, "threads": threads}))
    res = json.loads(results.read_text())
    res["wall_s"] = json.loads(wall.read_text())["wall_s"] if wall.exists() else None
    res["curve"] = read_curve(paths.metrics)
    log.info("%s seed %d: %s s wall", recipe, seed, f"{res['wall_s']:.0f}" if res["wall_s"] else "?")
    return res


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


def cell(values: list[float]) -> dict:
    """A table cell over seeds: {"mean", "std" (0 for one seed), "seeds"}."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def summary(cfg: ExperimentRunConfig, results: dict[str, list[dict]], commit: str) -> dict:
    """The machine-checked result: {"commit", "baseline", "default_recipe", "recipes": {name: {budget: {"mean",
    "std", "seeds"}}}, "bytes_per_page": {budget: n}, "wall_s": {name: [per run]}}; budgets in grid order."""
    recipes: dict[str, dict] = {}
    rows = next(iter(results.values()))[0]["rows"]
    order = [row["budget"] for row in rows]
    for name, runs in results.items():
        keep = reported_budgets(cfg, name)
        table = {}
        for budget in order:
            if keep is None or budget in keep:
                vals = [next(r["ndcg_at_5"] for r in res["rows"] if r["budget"] == budget) for res in runs]
                table[budget] = cell(vals)
        recipes[name] = table
    sizes = {r["budget"]: r["bytes_per_page"] for r in rows}
    return {"commit": commit, "baseline": cfg.experiment.baseline, "default_recipe": cfg.experiment.default_recipe,
            "recipes": recipes, "bytes_per_page": sizes,
            "wall_s": {name: [res["wall_s"] for res in runs] for name, runs in results.items()}}


def goals(result: dict) -> dict[str, bool]:
    """The issue's goals, checked on the default recipe: >= the baseline at every budget (the full budget within one
    std); at (L/2, 32, pool 2) >= 95% of its own full budget and >= the model trained there alone (when run)."""
    default, base = result["recipes"][result["default_recipe"]], result["recipes"][result["baseline"]]
    budgets = list(result["bytes_per_page"])
    full = budgets[0]
    layers = max(int(b.split("-")[0][1:]) for b in budgets)
    target = f"L{layers // 2}-d32-p2"
    out = {"at_least_baseline_everywhere": all(
        default[b]["mean"] >= base[b]["mean"] - (max(default[b]["std"], base[b]["std"]) if b == full else 0.0)
        for b in budgets if b in default and b in base)}
    if target in default:
        out[f"{target}_at_least_95pct_of_full"] = default[target]["mean"] >= 0.95 * default[full]["mean"]
        alone = [t[target]["mean"] for name, t in result["recipes"].items() if list(t) == [target]]
        if alone:
            out[f"{target}_at_least_separately_trained"] = default[target]["mean"] >= max(alone)
    return out


def markdown(result: dict) -> str:
    """Per budget: nDCG@5 mean ± std (seeds) of every recipe and its fraction of the recipe's own full budget."""
    recipes = result["recipes"]
    budgets = list(result["bytes_per_page"])
    full = budgets[0]  # rows start at the full budget
    lines = ["| budget | bytes/page | " + " | ".join(f"{r} (n={_seeds(recipes[r])})" for r in recipes) + " |",
             "|" + "---|" * (2 + len(recipes))]
    for b in budgets:
        cells = []
        for r in recipes:
            cell = recipes[r].get(b)
            if cell is None:
                cells.append("-")
                continue
            frac = f" ({cell['mean'] / recipes[r][full]['mean']:.2f})" if full in recipes[r] and b != full else ""
            cells.append(f"{cell['mean']:.3f} ± {cell['std']:.3f}{frac}")
        lines.append(f"| {b} | {int(result['bytes_per_page'][b])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seeds(table: dict) -> int:
    return next(iter(table.values()))["seeds"]


def plot_pareto(result: dict, path: Path) -> None:
    """nDCG@5 against bytes/page at the deepest and the shallowest exit: each grid recipe's Pareto frontier (mean
    of seeds), separately trained models as single points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.model.budgets import Budget

    sizes = result["bytes_per_page"]
    depths = sorted({Budget.parse(b).layers for b in sizes})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, depth in zip(axes, [depths[-1], depths[0]]):
        for i, (name, table) in enumerate(result["recipes"].items()):
            colour = f"C{i}"  # one colour per recipe in both panels
            pts = sorted((sizes[b], table[b]["mean"]) for b in table if Budget.parse(b).layers == depth)
            if len(table) == 1:
                xs, ys = zip(*pts) if pts else ((), ())  # a legend entry in both panels
                ax.plot(xs, ys, marker="*", markersize=13, linestyle="none", color=colour, label=name)
                continue
            best, frontier = -1.0, []
            for size, value in pts:
                best = max(best, value)
                frontier.append((size, best))
            ax.plot(*zip(*frontier), marker="o", color=colour, label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(f"exit after {depth} layers")
        ax.set_xlabel("bytes per page (fp16 index)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best nDCG@5 at <= bytes/page (mean of seeds)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(results: dict[str, list[dict]], path: Path) -> None:
    """The learning curve of every recipe: nDCG@5 against step at each curve budget, one panel per recipe, one thin
    line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), sharey=True, squeeze=False)
    for ax, (name, runs) in zip(axes[0], results.items()):
        colours = {}
        for res in runs:
            for budget, points in res["curve"].items():
                colour = colours.setdefault(budget, f"C{len(colours)}")
                ax.plot(*zip(*points), color=colour, alpha=0.8, label=budget if res is runs[0] else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("nDCG@5 on the eval set")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def main(argv: list[str] | None = None) -> None:
    cfg = parse_experiment(CLI, argv)
    out = Path(cfg.experiment.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_config(run_config(cfg), out / "config.yaml")
    shards = prepare(cfg, out)
    from mlflow import MlflowClient

    MlflowClient(cfg.tracking.tracking_uri).search_experiments()  # create the SQLite store once, not in a race
    seeds = sorted({s for r in cfg.experiment.recipes for s in cfg.experiment.seeds_of(r)})
    jobs = [(r, s) for s in seeds for r in cfg.experiment.recipes if s in cfg.experiment.seeds_of(r)]  # seed-major
    with ThreadPoolExecutor(cfg.experiment.parallel) as pool:
        done = list(pool.map(lambda j: run_one(cfg, out, j[0], j[1], shards), jobs))
    results: dict[str, list[dict]] = {}
    for (recipe, _), res in sorted(zip(jobs, done), key=lambda j: list(cfg.experiment.recipes).index(j[0][0])):
        results.setdefault(recipe, []).append(res)
    result = summary(cfg, results, git_commit())
    result["goals"] = goals(result)
    target = Path(cfg.experiment.results)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    target.with_suffix(".md").write_text(table + "\n")
    plot_pareto(result, target.with_name(target.stem + "_pareto.png"))
    plot_curves(results, target.with_name(target.stem + "_curves.png"))
    print(table)
    print("\n".join(f"goal {name}: {'met' if ok else 'MISSED'}" for name, ok in result["goals"].items()))
    print(f"\nresults: {target} (+ .md, _pareto.png, _curves.png)  MLflow: {cfg.tracking.tracking_uri}")


if __name__ == "__main__":
    main()
