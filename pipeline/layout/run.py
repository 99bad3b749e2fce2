"""The run directory: what training writes under `train.output_dir` and where evaluation, export and serving find
it by default.

    <train.output_dir>/
      checkpoints/            DeepSpeed ZeRO-3 checkpoints `step-N/` (resumable); `step-N/complete.json`, written
                              last, records every file's size and sha256; `latest` names the newest
                              (pipeline/train/checkpoint.py)
      .job.lock               the running job's flock and name (pipeline/layout/lock.py)
      final/                  Retriever.save_pretrained: safetensors + config + processor; loads without DeepSpeed
      run.json                {"mlflow_run_id", "tracking_uri", "experiment", "steps"}
      resolved_config.yaml    the config the run trained with
      metrics.jsonl           one JSON object per logged step
      eval/results.json       pipeline.evaluate's grid (with results.md, results.csv, pareto.png)
      variants/<name>/        pipeline.export's variant directories, each with card.json

Every default path of a later stage comes from `StagePaths.from_config(cfg)`, so a path is spelled here only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.layout.files import atomic_write

CARD = "card.json"
RESULTS = "results.json"


@dataclass(frozen=True)
class RunPaths:
    """The files of one training run's output directory."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def resolved_config(self) -> Path:
        return self.root / "resolved_config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def variants(self) -> Path:
        return self.root / "variants"

    def read_run_json(self) -> dict | None:
        """run.json's content, or None when the run never wrote one."""
        return json.loads(self.run_json.read_text()) if self.run_json.is_file() else None

    def write_run_json(self, record: dict) -> None:
        atomic_write(self.run_json, json.dumps(record, indent=1))


@dataclass(frozen=True)
class StagePaths:
    """Where evaluation, export and serving read and write: the configured paths, else the run directory's."""

    run: RunPaths
    eval_model: Path  # the weights evaluated
    eval_dir: Path  # results.json, .md, .csv, pareto.png
    export_model: Path  # the weights variants are cut from
    results: Path  # the evaluation export takes quality from
    variants: Path  # one directory per exported budget
    eval_shards: str | None  # the shard directory of the eval split (None: a Parquet set or nothing)
    serve_shards: str | None  # the pages `serve index` encodes

    @classmethod
    def from_config(cls, cfg) -> "StagePaths":
        run = RunPaths(Path(cfg.train.output_dir))
        eval_dir = Path(cfg.eval.output_dir) if cfg.eval.output_dir else run.eval_dir
        eval_shards = cfg.eval.shards or cfg.data.shards
        return cls(
            run=run,
            eval_model=Path(cfg.eval.model) if cfg.eval.model else run.final,
            eval_dir=eval_dir,
            export_model=Path(cfg.export.model) if cfg.export.model else run.final,
            results=Path(cfg.export.results) if cfg.export.results else eval_dir / RESULTS,
            variants=Path(cfg.export.output_dir) if cfg.export.output_dir else run.variants,
            eval_shards=eval_shards,
            serve_shards=cfg.serve.shards or eval_shards,
        )


def card_path(variant_dir: str | Path) -> Path:
    return Path(variant_dir) / CARD


def read_card(variant_dir: str | Path) -> dict:
    return json.loads(card_path(variant_dir).read_text())


def write_card(variant_dir: str | Path, card: dict) -> Path:
    return atomic_write(card_path(variant_dir), json.dumps(card, indent=2))
