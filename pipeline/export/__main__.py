"""python -m pipeline.export: one variant directory per budget of export.budgets, each with its card, and (by
default) each registered as a version of tracking.registered_model.

    python -m pipeline.export --config configs/tiny.yaml [--model DIR] [--output-dir DIR] [export.register=false]

Quality on the cards comes from the evaluation's results.json when it measured this model at that budget;
budgets it lacks are evaluated here on the configured eval set first.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline.cli import Command, flag, parse_cli
from pipeline.config import Config
from pipeline.logs import setup_logging

log = logging.getLogger("pipeline.export")
CLI = Command(
    "python -m pipeline.export", "Export budget variants of a trained retriever (and register them).",
    flags=(flag("--model", key="export.model", metavar="DIR"), flag("--output-dir", key="export.output_dir",
                                                                    metavar="DIR"),
           flag("--results", key="export.results", metavar="FILE")),
    sections=("export", "eval", "model", "train", "tracking"),
)


def run(cfg: Config) -> list[tuple[str, Path, dict]]:
    """Export (and register) every budget of cfg.export.budgets -> [(name, variant dir, card)]."""
    from pipeline.export.exporter import current_results, export_variants
    from pipeline.export.variants import resolve_budget
    from pipeline.layout.run import StagePaths
    from pipeline.model.retriever import Retriever

    paths = StagePaths.from_config(cfg)
    model_dir = paths.export_model
    full = Retriever.from_pretrained(model_dir, cfg.model.saved_at(model_dir)).eval()
    budgets = {name: resolve_budget(spec, full.exits, full.dim) for name, spec in cfg.export.budgets.items()}
    results = current_results(paths.results, full, model_dir, sorted(set(budgets.values()), reverse=True), cfg.eval,
                              paths.eval_shards)
    run_info = paths.run.read_run_json()
    source_run = run_info["mlflow_run_id"] if run_info else results.get("source_run")
    done = export_variants(full, budgets, results, source_run, paths.variants)
    if cfg.export.register:
        from pipeline.registry.register import register_variants

        register_variants(done, cfg.tracking)
    return done


def main(argv: list[str] | None = None) -> int:
    from pipeline.layout.shards import ManifestError, ShardError, error_line

    cfg = parse_cli(CLI, argv)
    setup_logging()
    try:
        done = run(cfg)
    except (ManifestError, ShardError) as e:  # quality from an eval set that is not what its manifest says
        log.error("%s", error_line(e))
        return 1
    for name, path, card in done:
        reg = card.get("registered")
        log.info("%s %s: %.0f bytes/page, nDCG@5 %.4f -> %s%s", name, card["budget"], card["bytes_per_page"],
                 card["ndcg_at_5"], path, f" (registered v{reg['version']})" if reg else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
