"""python -m pipeline.export: one variant directory per budget of export.budgets, each with its card, and (by
default) each registered as a version of tracking.registered_model.

    python -m pipeline.export --config configs/tiny.yaml [--model DIR] [--output-dir DIR] [export.register=false]

Quality on the cards comes from the evaluation's results.json when it measured this model at that budget;
budgets it lacks are evaluated here on the configured eval set first.
"""

from __future__ import annotations

import dataclasses
import json
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


def _results(cfg: Config, full, model_dir: Path, budgets: list) -> dict:
    """Eval results covering `budgets` for this very model: the saved ones, else a fresh evaluation."""
    from pipeline.evaluate.__main__ import eval_paths
    from pipeline.evaluate.runinfo import model_stamp
    from pipeline.export.variants import row_for

    path = Path(cfg.export.results or eval_paths(cfg)[1] / "results.json")
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved and saved.get("model_stamp") == model_stamp(model_dir) and all(row_for(saved, b) for b in budgets):
        log.info("quality from %s (eval set %s)", path, saved["eval_fingerprint"])
        return saved
    log.info("no current evaluation of %s at %s: evaluating them now", model_dir, ", ".join(map(str, budgets)))
    from pipeline.evaluate.data import open_eval_set
    from pipeline.evaluate.grid import evaluate_budgets

    e = cfg.eval
    eval_set = open_eval_set(e.shards or cfg.data.shards, e.split, e.parquet, e.max_pages)
    return evaluate_budgets(full, eval_set, budgets, e.batch_size, e.run_depth, e.index_dtype, e.timing_pages,
                            e.progress)


def run(cfg: Config) -> list[tuple[str, Path, dict]]:
    """Export (and register) every budget of cfg.export.budgets -> [(name, variant dir, card)]."""
    from pipeline.evaluate.runinfo import read_run_json
    from pipeline.export.variants import export_variant, make_card, resolve_budget
    from pipeline.model.retriever import Retriever

    model_dir = Path(cfg.export.model or Path(cfg.train.output_dir) / "final")
    out_root = Path(cfg.export.output_dir or Path(cfg.train.output_dir) / "variants")
    mcfg = dataclasses.replace(cfg.model, name_or_path=str(model_dir), lora=dataclasses.replace(cfg.model.lora, r=0))
    full = Retriever.from_pretrained(model_dir, mcfg).eval()
    budgets = {name: resolve_budget(spec, full.exits) for name, spec in cfg.export.budgets.items()}
    results = _results(cfg, full, model_dir, sorted(set(budgets.values()), reverse=True))
    run_info = read_run_json(cfg.train.output_dir)
    source_run = run_info["mlflow_run_id"] if run_info else results.get("source_run")
    done = []
    for name, budget in budgets.items():
        card = make_card(name, budget, results, source_run)
        done.append((name, export_variant(full, budget, out_root / name, card), card))
    if cfg.export.register:
        from pipeline.registry.register import register_variant

        for name, path, card in done:
            mv = register_variant(path, card, cfg.tracking)
            card["registered"] = {"name": mv.name, "version": int(mv.version)}
            (path / "card.json").write_text(json.dumps(card, indent=2))
    return done


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(CLI, argv)
    setup_logging()
    for name, path, card in run(cfg):
        reg = card.get("registered")
        log.info("%s %s: %.0f bytes/page, nDCG@5 %.4f -> %s%s", name, card["budget"], card["bytes_per_page"],
                 card["ndcg_at_5"], path, f" (registered v{reg['version']})" if reg else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
