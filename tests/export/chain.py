"""The stages after training, built once per test session and shared by the evaluate/export/registry/serve tests:
a saved tiny Retriever (the "trained" model), synthetic shards, an evaluation, exported variants, a registry.

Each step is cached under the session's base temp dir, so whichever test module runs first builds it."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import load_config

EXPORT_BUDGETS = {"full": "full", "half": "L2-d32-p2", "half-bin": "L2-d32-p2-bin", "quarter": "L1-d16-p4"}
# (layers, dim, pool, precision) each name must resolve to on the 4-layer, 128-wide tiny model
RESOLVED = {"full": (4, 128, 1, "fp16"), "half": (2, 32, 2, "fp16"), "half-bin": (2, 32, 2, "bin"),
            "quarter": (1, 16, 4, "fp16")}
NAME = "retriever-test"


def _root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "chain"
    root.mkdir(exist_ok=True)
    return root


def trained(tmp_path_factory, tiny_dir: Path) -> tuple[Path, Path]:
    """(model dir, shard dir): a tiny Qwen2-VL Retriever saved like train's final/, 12 synthetic pages."""
    from pipeline.model.retriever import Retriever
    from tests.data.synthetic import write_shards

    root = _root(tmp_path_factory)
    model, shards = root / "run" / "final", root / "shards"
    if not (model / "retriever_config.json").is_file():
        Retriever.from_pretrained(tiny_dir).save_pretrained(model)
    if not (shards / "manifest.json").is_file():
        write_shards(shards, n_pages=12, shard_size=8)
    return model, shards


def config(tmp_path_factory, tiny_dir: Path, *extra: str):
    """The Config the stages run under (eval on the synthetic split, SQLite registry under the temp root)."""
    model, shards = trained(tmp_path_factory, tiny_dir)
    root = _root(tmp_path_factory)
    budgets = json.dumps(EXPORT_BUDGETS)
    return load_config(None, [
        f"train.output_dir={root / 'run'}", f"eval.shards={shards}", "eval.split=train", "eval.timing_pages=2",
        "eval.progress=false", f"tracking.tracking_uri=sqlite:///{root / 'mlruns.db'}",
        f"tracking.registered_model={NAME}", f"export.budgets={budgets}", *extra,
    ])


def exported(tmp_path_factory, tiny_dir: Path) -> dict[str, tuple[Path, dict]]:
    """{name: (variant dir, card)} for EXPORT_BUDGETS, exported without registering (quality measured inside)."""
    from pipeline.export.__main__ import run

    root = _root(tmp_path_factory)
    done = root / "exported.json"
    if not done.is_file():
        cfg = config(tmp_path_factory, tiny_dir, "export.register=false", f"export.output_dir={root / 'variants'}")
        done.write_text(json.dumps({name: [str(path), card] for name, path, card in run(cfg)}))
    return {name: (Path(p), card) for name, (p, card) in json.loads(done.read_text()).items()}


def registered(tmp_path_factory, tiny_dir: Path) -> dict[str, dict]:
    """{name: card with "registered": {name, version}}: the exported variants registered in the SQLite store."""
    from pipeline.registry.register import register_variant

    root = _root(tmp_path_factory)
    done = root / "registered.json"
    if not done.is_file():
        cfg = config(tmp_path_factory, tiny_dir)
        out = {}
        for name, (path, card) in exported(tmp_path_factory, tiny_dir).items():
            mv = register_variant(path, card, cfg.tracking)
            out[name] = {**card, "registered": {"name": mv.name, "version": int(mv.version)}}
        done.write_text(json.dumps(out))
    return json.loads(done.read_text())
