"""Write and read budget variants: a saved Retriever truncated to the budget's exit with its head sliced to the
budget's width (its pool factor recorded as the default budget), plus card.json (docs/interfaces.md).

Loading a variant needs torch, transformers and safetensors only: no DeepSpeed, no training code, no pickle.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.layout.run import read_card, write_card
from pipeline.model.budgets import Budget

log = logging.getLogger(__name__)


def resolve_budget(spec: Budget, exits: list[int], dim: int) -> Budget:
    """A budget of the config on a model with `exits` and head width `dim` (an open layer count is the last exit,
    an open width the full one); the layer count must be an exit of the model."""
    budget = spec.resolve(exits, dim)
    if budget.layers not in exits:
        raise ValueError(f"budget {spec}: {budget.layers} layers is not an exit of this model (exits {exits})")
    return budget


def row_for(results: dict | None, budget: Budget) -> dict | None:
    """The eval results row of `budget`, or None."""
    for row in (results or {}).get("rows", []):
        if row["budget"] == str(budget):
            return row
    return None


def make_card(name: str, budget: Budget, results: dict, source_run: str | None) -> dict:
    """card.json: budget (with its page-vector precision), bytes/page and nDCG@5 measured on the named eval set (with
    its fingerprint), source run, and every other measured metric of that budget."""
    row = row_for(results, budget)
    if row is None:
        raise KeyError(f"no evaluation of {budget} in the results")
    return {
        "name": name,
        "budget": budget.as_dict(),
        "bytes_per_page": row["bytes_per_page"],
        "ndcg_at_5": row["ndcg_at_5"],
        "eval_set": results["eval_set"],
        "eval_fingerprint": results["eval_fingerprint"],
        "source_run": source_run,
        "metrics": {k: v for k, v in row.items() if k not in ("budget", "layers", "dim", "pool", "precision")},
    }


def export_variant(full, budget: Budget, out_dir: str | Path, card: dict) -> Path:
    """Save `full.for_budget(budget)` (only budget.layers decoder layers, head [hidden -> budget.dim], the budget
    with its precision as the default) and its card to `out_dir`; returns the directory."""
    out = Path(out_dir)
    variant = full.for_budget(budget)
    variant.save_pretrained(out)
    write_card(out, card)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    log.info("variant %s (%s): %.1f MB of weights -> %s", card.get("name"), budget, size / 2**20, out)
    return out


def load_variant(variant_dir: str | Path, device: str | None = None):
    """(Retriever at the variant's budget, card) from a variant directory, in eval mode, on `device`."""
    from pipeline.model.config import ModelConfig
    from pipeline.model.retriever import Retriever

    retriever = Retriever.from_pretrained(variant_dir, ModelConfig(name_or_path=str(variant_dir)))
    retriever.eval()
    if device:
        retriever.to(device)
    return retriever, read_card(variant_dir)


def weights_bytes(model_dir: str | Path) -> int:
    """Bytes of all safetensors files in a model directory."""
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
