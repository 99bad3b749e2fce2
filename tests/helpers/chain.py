"""The stages after training, shared by the evaluate/export/registry/serve tests (the `chain` fixture, one per test
worker): the reference run's final model copied as a run of its own, synthetic eval shards, exported variants and a
SQLite registry holding them. Each step is built on first use and cached in files under the chain's root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.config import load_config

EXPORT_BUDGETS = {"full": "full", "half": "L2-d32-p2", "half-bin": "L2-d32-p2-bin", "quarter": "L1-d16-p4"}
# (layers, dim, pool, precision) each name must resolve to on the 4-layer, 128-wide tiny model
RESOLVED = {"full": (4, 128, 1, "fp16"), "half": (2, 32, 2, "fp16"), "half-bin": (2, 32, 2, "bin"),
            "quarter": (1, 16, 4, "fp16")}
NAME = "retriever-test"


class Chain:
    """Post-training stages over the trained model at `final` (copied, never changed), under `root`."""

    def __init__(self, root: Path, final: Path):
        from tests.helpers.shards import write_shards

        self.root = root
        self.model_dir, self.shards = root / "run" / "final", root / "shards"
        if not (self.model_dir / "retriever_config.json").is_file():
            shutil.copytree(final, self.model_dir)
        if not (self.shards / "manifest.json").is_file():
            write_shards(self.shards, n_pages=12, shard_size=8)

    def config(self, *extra: str):
        """The Config the stages run under (eval on the synthetic split, SQLite registry under the root)."""
        return load_config(None, [
            f"train.output_dir={self.root / 'run'}", f"eval.shards={self.shards}", "eval.split=train",
            "eval.timing_pages=2", "eval.progress=false", f"tracking.tracking_uri=sqlite:///{self.root / 'mlruns.db'}",
            f"tracking.registered_model={NAME}", f"export.budgets={json.dumps(EXPORT_BUDGETS)}", *extra,
        ])

    def exported(self) -> dict[str, tuple[Path, dict]]:
        """{name: (variant dir, card)} for EXPORT_BUDGETS, exported without registering (quality measured inside)."""
        from pipeline.export.__main__ import run

        done = self.root / "exported.json"
        if not done.is_file():
            cfg = self.config("export.register=false", f"export.output_dir={self.root / 'variants'}")
            done.write_text(json.dumps({name: [str(path), card] for name, path, card in run(cfg)}))
        return {name: (Path(p), card) for name, (p, card) in json.loads(done.read_text()).items()}

    def registered(self) -> dict[str, dict]:
        """{name: card with "registered": {name, version}}: the exported variants registered in the SQLite store."""
        from pipeline.registry.register import register_variant

        done = self.root / "registered.json"
        if not done.is_file():
            cfg = self.config()
            out = {}
            for name, (path, card) in self.exported().items():
                mv = register_variant(path, card, cfg.tracking)
                out[name] = {**card, "registered": {"name": mv.name, "version": int(mv.version)}}
            done.write_text(json.dumps(out))
        return json.loads(done.read_text())
