"""The quality experiment: does joint width x depth x count training beat truncating a full-budget model?

    python -m benchmarks.quality_experiment [--config configs/experiment.yaml] [key=value ...]   (make experiment)

Every run goes through the real path: synthetic PDFs -> the render job -> `python -m pipeline.train`
(DeepSpeed ZeRO-3, gradient cache, MLflow) -> `python -m pipeline.evaluate` over the whole budget grid.
Recipes and seeds come from the `experiment` config section; results land in
`<experiment.out_dir>/summary.md`, `summary.json` and `pareto.png`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cli import Command, parse_cli
from pipeline.config import Config, save_config
from pipeline.configlib import FieldError, PosInt, Section
from pipeline.logs import setup_logging

log = logging.getLogger("experiment")
PY = sys.executable


@dataclass(kw_only=True)
class ExperimentConfig(Section):
    """The quality experiment: recipes x seeds through the real training path."""

    out_dir: str = "experiment_out"
    """Everything the experiment writes (corpora, shards, runs, summary)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of each recipe (model init, data order)."""
    recipes: dict[str, list[str]] = field(
        default_factory=lambda: {
            "truncation": ["loss.budgets=full"],
            "2d": ["loss.budgets=2d", "loss.sample_k=6"],
            "3d": ["loss.budgets=grid", "loss.sample_k=6"],
            "3d+distill": ["loss.budgets=grid", "loss.sample_k=6", "loss.distill_weight=1.0"],
        }
    )
    """name -> dotted overrides of the run config."""
    last_head_recipes: list[str] = field(default_factory=lambda: ["truncation"])
    """Recipes evaluated with the last head at every exit."""
    eval_docs: PosInt = 67
    """Held-out documents of a separate corpus (unique answer codes)."""
    parallel: PosInt = 2
    """Runs at once (each a single-rank DeepSpeed process)."""

    def check(self) -> None:
        if not self.seeds or not self.recipes:
            raise FieldError("seeds" if not self.seeds else "recipes", "must not be empty")
        unknown = [r for r in self.last_head_recipes if r not in self.recipes]
        if unknown:
            raise FieldError("last_head_recipes", f"{unknown} are not recipes ({', '.join(self.recipes)})")


@dataclass(kw_only=True)
class ExperimentRunConfig(Config):
    """The pipeline's tree plus the experiment's own section."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def check(self) -> None:
        from pipeline.configlib import apply_override, build

        for name, overrides in self.experiment.recipes.items():  # each recipe must give a valid run config
            tree = dataclasses.asdict(run_config(self))
            try:
                for item in overrides:
                    apply_override(tree, item)
                build(Config, tree)
            except ValueError as e:
                raise FieldError(f"experiment.recipes.{name}", str(e)) from None


CLI = Command("python -m benchmarks.quality_experiment", __doc__.splitlines()[0],
              sections=("experiment",), root=ExperimentRunConfig)


def run_config(cfg: ExperimentRunConfig) -> Config:
    """The pipeline part of the tree (what each stage's command reads)."""
    return Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)})


def _run(cmd: list[str], log_file: Path, threads: int | None = None) -> None:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_file, "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({res.returncode}); see {log_file}")


def prepare(cfg: Config, out: Path) -> tuple[Path, Path]:
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


def run_one(cfg: Config, out: Path, recipe: str, seed: int, shards: tuple[Path, Path]) -> dict:
    """Build the seed's random model, train one recipe, evaluate the grid; returns the eval results."""
    run_dir = out / "runs" / f"{recipe}-s{seed}"
    results = run_dir / "eval" / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = out / "models" / f"tiny-s{seed}"
    if not (model_dir / "config.json").exists():  # random init, the seed's own; codes are single tokens
        _run([PY, "-m", "pipeline.model.tiny", "--config", str(out / "config.yaml"), "--out", str(model_dir),
              f"train.seed={seed}"], out / f"tiny-s{seed}.log")
    common = ["--config", str(out / "config.yaml"), f"model.name_or_path={model_dir}",
              f"train.output_dir={run_dir}", f"tracking.run_name={recipe}-s{seed}"]
    threads = max(1, (os.cpu_count() or 2) // cfg.experiment.parallel)
    _run([PY, "-m", "pipeline.train", *common, f"data.shards={shards[0]}", f"train.seed={seed}",
          f"data.seed={seed}", *cfg.experiment.recipes[recipe]], run_dir / "train.log", threads)
    evaluated = run_dir / "final"
    if recipe in cfg.experiment.last_head_recipes:
        evaluated = share_last_head(evaluated, run_dir / "final-last-head")
    _run([PY, "-m", "pipeline.evaluate", *common, f"eval.shards={shards[1]}", f"eval.model={evaluated}"],
         run_dir / "eval.log", threads)
    log.info("done: %s seed %d", recipe, seed)
    return json.loads(results.read_text())


def summarise(results: dict[str, list[dict]], out: Path) -> str:
    """Markdown table: per budget, nDCG@5 mean ± spread (std over seeds) per recipe and fraction of full."""
    recipes = list(results)
    first = results[recipes[0]][0]["rows"]
    full_key = first[0]["budget"]  # rows start at the full budget
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for r in recipes:
        for row_i, row in enumerate(first):
            vals = [res["rows"][row_i]["ndcg_at_5"] for res in results[r]]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            stats.setdefault(row["budget"], {})[r] = (statistics.mean(vals), sd)
    head = "| budget | bytes/page | " + " | ".join(f"{r} nDCG@5 | {r} / full" for r in recipes) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(recipes))]
    for row in first:
        cells = []
        for r in recipes:
            m, sd = stats[row["budget"]][r]
            cells += [f"{m:.3f} ± {sd:.3f}", f"{m / max(stats[full_key][r][0], 1e-9):.2f}"]
        lines.append(f"| {row['budget']} | {int(row['bytes_per_page'])} | " + " | ".join(cells) + " |")
    (out / "summary.json").write_text(json.dumps({"stats": stats, "runs": {r: len(v) for r, v in results.items()}},
                                                 indent=1))
    _plot(stats, first, recipes, out / "pareto.png")
    return "\n".join(lines)


def _plot(stats: dict, rows: list[dict], recipes: list[str], path: Path) -> None:
    """nDCG@5 against bytes/page at the deepest and the shallowest exit, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["layers"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, depth in zip(axes, [depths[-1], depths[0]]):
        pts = sorted((r["bytes_per_page"], r["budget"]) for r in rows if r["layers"] == depth)
        for recipe in recipes:
            best, frontier = -1.0, []
            for b, name in pts:  # the Pareto frontier of each recipe at this depth
                best = max(best, stats[name][recipe][0])
                frontier.append((b, best))
            ax.plot(*zip(*frontier), marker="o", label=recipe)
        ax.set_xscale("log", base=2)
        ax.set_title(f"exit after {depth} layers")
        ax.set_xlabel("bytes per page (fp16 index)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best nDCG@5 at <= bytes/page (mean of seeds)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", "configs/experiment.yaml", *argv]
    cfg = parse_cli(CLI, argv)
    setup_logging()
    out = Path(cfg.experiment.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_config(run_config(cfg), out / "config.yaml")
    shards = prepare(cfg, out)
    from mlflow import MlflowClient

    MlflowClient(cfg.tracking.tracking_uri).search_experiments()  # create the SQLite store once, not in a race
    jobs = [(r, s) for s in cfg.experiment.seeds for r in cfg.experiment.recipes]
    with ThreadPoolExecutor(cfg.experiment.parallel) as pool:
        done = list(pool.map(lambda j: run_one(cfg, out, j[0], j[1], shards), jobs))
    results: dict[str, list[dict]] = {}
    for (recipe, _), res in zip(jobs, done):
        results.setdefault(recipe, []).append(res)
    table = summarise(results, out)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    print(f"\nsummary: {out / 'summary.md'}  plot: {out / 'pareto.png'}  MLflow: {cfg.tracking.tracking_uri}")


if __name__ == "__main__":
    main()
