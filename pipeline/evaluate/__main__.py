"""python -m pipeline.evaluate: every budget of the grid on an eval set -> table, CSV, Pareto plot, MLflow run.

    python -m pipeline.evaluate --config configs/tiny.yaml [--model DIR] [--shards DIR | --parquet FILE]
"""

from __future__ import annotations

import logging
import sys

from pipeline.cli import Command, flag, parse_cli
from pipeline.config import Config
from pipeline.logs import setup_logging

log = logging.getLogger("pipeline.evaluate")
CLI = Command(
    "python -m pipeline.evaluate", "Evaluate a trained retriever over its budget grid.",
    flags=(flag("--model", key="eval.model", metavar="DIR"), flag("--shards", key="eval.shards", metavar="DIR"),
           flag("--split", key="eval.split"), flag("--parquet", key="eval.parquet", metavar="FILE"),
           flag("--output-dir", key="eval.output_dir", metavar="DIR"), flag("--max-pages", key="eval.max_pages")),
    sections=("eval", "model", "data", "train", "tracking"),
)


def run(cfg: Config) -> dict:
    """Evaluate, write the report, log it to the training run; returns the results dict."""
    from pipeline.evaluate.data import open_eval_set
    from pipeline.evaluate.grid import evaluate_budgets
    from pipeline.evaluate.report import write_report
    from pipeline.evaluate.runinfo import log_to_run, model_stamp
    from pipeline.layout.run import StagePaths
    from pipeline.model.budgets import retriever_grid
    from pipeline.model.retriever import Retriever

    paths = StagePaths.from_config(cfg)
    model_dir, out_dir = paths.eval_model, paths.eval_dir
    eval_set = open_eval_set(paths.eval_shards, cfg.eval.split, cfg.eval.parquet, cfg.eval.max_pages)
    retriever = Retriever.from_pretrained(model_dir, cfg.model.saved_at(model_dir))
    e = cfg.eval
    grid = retriever_grid(retriever, cfg.model.widths, cfg.model.pools, e.precisions)
    cascades = [[(b.resolve(retriever.exits, retriever.dim), n) for b, n in c] for c in e.cascades]
    results = evaluate_budgets(retriever, eval_set, grid, e.batch_size, e.run_depth, e.timing_pages, e.progress,
                               cascades)
    results.update(model=str(model_dir.resolve()), model_stamp=model_stamp(model_dir))
    run_info = paths.run.read_run_json()
    results["source_run"] = run_info["mlflow_run_id"] if run_info else None
    files = write_report(results, out_dir)
    log.info("report: %s", ", ".join(str(f) for f in files))
    if e.log_mlflow and run_info:
        log_to_run(results, files, run_info)
    elif e.log_mlflow:
        log.warning("no %s/run.json: results not logged to MLflow", cfg.train.output_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    from pipeline.layout.shards import ManifestError, ShardError, error_line

    cfg = parse_cli(CLI, argv)
    setup_logging()
    try:
        results = run(cfg)
    except (ManifestError, ShardError) as e:  # an eval set that is not what its manifest says: no numbers
        log.error("%s", error_line(e))
        return 1
    best = max(results["rows"], key=lambda r: r["ndcg_at_5"])
    log.info("%d budgets on %d pages / %d queries; best nDCG@5 %.4f at %s", len(results["rows"]), results["pages"],
             results["queries"], best["ndcg_at_5"], best["budget"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
