"""The pipeline's typed config tree, assembled from the sections each stage owns (data preparation's sections join
it in `pipeline.cli.RunConfig`, the tree a run's YAML holds).

`load_config(path, overrides)` reads a YAML file into `Config`, applies `key.sub=value` overrides (values parsed
as YAML, then type-checked) and runs every section's checks; an unknown key, a wrong type, a value out of range or
a missing/unparsable file is one `ConfigError` naming the key (or file and line). Entry points parse their command
line with `pipeline.cli`. Importing this module imports no torch, Ray or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from pydantic import Field

from pipeline.configlib import ConfigError, Section, load_tree, save_config
from pipeline.data.config import DataConfig
from pipeline.evaluate.config import EvalConfig
from pipeline.export.config import ExportConfig
from pipeline.model.config import LoraConfig, ModelConfig
from pipeline.registry.config import PromoteConfig
from pipeline.serve.config import ServeConfig
from pipeline.train.config import LossConfig, TrackingConfig, TrainConfig

__all__ = [
    "Config", "ConfigError", "DataConfig", "EvalConfig", "ExportConfig", "LoraConfig", "LossConfig", "ModelConfig",
    "PromoteConfig", "ServeConfig", "TrackingConfig", "TrainConfig", "load_config", "save_config",
]


class Config(Section):
    """The pipeline's tree: one section per stage."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), root: type = Config) -> Any:
    """Load YAML at `path` (or the defaults) and apply `key.sub=value` overrides; every check runs."""
    return load_tree(root, path, overrides)
