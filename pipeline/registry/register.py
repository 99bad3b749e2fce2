"""Register a budget variant as a version of one registered model: log it as a pyfunc (signature, explicit pip
requirements, the variant directory as its artifact) and tag the version with its budget and measured quality."""

from __future__ import annotations

import logging
from importlib.metadata import version as dist_version
from pathlib import Path

import pandas as pd

from pipeline.tracking_store import ensure_experiment, prepare_uri

log = logging.getLogger(__name__)
REQUIREMENTS = ["torch", "transformers", "safetensors", "tokenizers", "pillow", "mlflow", "pandas", "pyyaml"]


def variant_tags(card: dict) -> dict[str, str]:
    """The registry tags of a variant card: budget.layers/dim/pool/precision, bytes_per_page, ndcg_at_5, eval
    fingerprint, eval set, source run, variant name."""
    b = card["budget"]
    return {
        "budget.layers": str(b["layers"]), "budget.dim": str(b["dim"]), "budget.pool": str(b["pool"]),
        "budget.precision": b.get("precision", "fp16"),
        "bytes_per_page": repr(float(card["bytes_per_page"])), "ndcg_at_5": repr(float(card["ndcg_at_5"])),
        "eval_fingerprint": card["eval_fingerprint"], "eval_set": str(card["eval_set"]),
        "source_run": str(card.get("source_run") or ""), "variant": str(card.get("name", "")),
    }


def pip_requirements() -> list[str]:
    """What serving a variant needs, pinned to the versions installed here (no DeepSpeed)."""
    return [f"{name}=={dist_version(name)}" for name in REQUIREMENTS]


def _run_exists(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
        return True
    except Exception:  # another store, or a deleted run
        return False


def register_variant(variant_dir: str | Path, card: dict, tracking):
    """Log `variant_dir` as a pyfunc model (in the source run when this store has it, else in a new run of
    tracking.experiment) and register it as a new version of tracking.registered_model with variant_tags(card).
    Returns the MLflow ModelVersion."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline.registry.pyfunc import ARTIFACT, SIGNATURE

    mlflow.set_tracking_uri(prepare_uri(tracking.tracking_uri))
    client = MlflowClient(tracking_uri=tracking.tracking_uri, registry_uri=tracking.tracking_uri)
    source = card.get("source_run")
    if _run_exists(client, source):
        run_ctx = mlflow.start_run(run_id=source)
    else:
        run_ctx = mlflow.start_run(experiment_id=ensure_experiment(client, tracking),
                                   run_name=f"export-{card.get('name', 'variant')}")
    code = Path(__file__).resolve().parents[1]  # the pipeline package: what the pyfunc imports when served
    example = pd.DataFrame({"query": ["example query"], "image": [""]})
    with run_ctx:
        info = mlflow.pyfunc.log_model(
            name=f"variant-{card.get('name', 'variant')}", python_model=str(code / "registry" / "pyfunc_model.py"),
            artifacts={ARTIFACT: str(variant_dir)}, code_paths=[str(code)], signature=SIGNATURE,
            input_example=example, pip_requirements=pip_requirements(), tags=variant_tags(card),
        )
    mv = mlflow.register_model(info.model_uri, tracking.registered_model, tags=variant_tags(card))
    b = card["budget"]
    client.update_model_version(
        tracking.registered_model, mv.version,
        description=f"variant '{card.get('name')}': {b['layers']} layers, dim {b['dim']}, pool {b['pool']}, "
                    f"{b.get('precision', 'fp16')} page vectors; "
                    f"{card['bytes_per_page']:.0f} bytes/page; nDCG@5 {card['ndcg_at_5']:.4f} on {card['eval_set']}")
    log.info("registered %s v%s (%s)", tracking.registered_model, mv.version, card.get("name"))
    return mv


def register_variants(done: list[tuple[str, Path, dict]], tracking) -> None:
    """Register each exported (name, variant dir, card) and record the version on its card (card.json rewritten
    atomically with `registered`: {"name", "version"})."""
    from pipeline.layout.run import write_card

    for _, path, card in done:
        mv = register_variant(path, card, tracking)
        card["registered"] = {"name": mv.name, "version": int(mv.version)}
        write_card(path, card)
