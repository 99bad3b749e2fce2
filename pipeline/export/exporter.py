"""Export as a library: the quality each card quotes (a current evaluation of this very model, else a fresh one)
and the variant directories. Registering variants is the registry's job (pipeline.registry.register), called by
the entry point; nothing here imports an entry point or the registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.evaluate.runinfo import model_stamp
from pipeline.export.variants import export_variant, make_card, row_for
from pipeline.model.budgets import Budget

log = logging.getLogger(__name__)


def current_results(results_file: Path, full, model_dir: Path, budgets: list[Budget], eval_cfg,
                    eval_shards: str | None) -> dict:
    """Eval results covering `budgets` for this very model: the saved `results_file` when its model stamp matches,
    else a fresh evaluation on the configured eval set (eval_cfg: the eval section)."""
    saved = json.loads(results_file.read_text()) if results_file.is_file() else None
    if saved and saved.get("model_stamp") == model_stamp(model_dir) and all(row_for(saved, b) for b in budgets):
        log.info("quality from %s (eval set %s)", results_file, saved["eval_fingerprint"])
        return saved
    log.info("no current evaluation of %s at %s: evaluating them now", model_dir, ", ".join(map(str, budgets)))
    from pipeline.evaluate.data import open_eval_set
    from pipeline.evaluate.grid import evaluate_budgets

    e = eval_cfg
    eval_set = open_eval_set(eval_shards, e.split, e.parquet, e.max_pages)
    return evaluate_budgets(full, eval_set, budgets, e.batch_size, e.run_depth, e.timing_pages, e.progress)


def export_variants(full, budgets: dict[str, Budget], results: dict, source_run: str | None,
                    out_root: Path) -> list[tuple[str, Path, dict]]:
    """One variant directory `out_root/<name>` (with its card) per named budget -> [(name, directory, card)]."""
    done = []
    for name, budget in budgets.items():
        card = make_card(name, budget, results, source_run)
        done.append((name, export_variant(full, budget, out_root / name, card), card))
    return done
