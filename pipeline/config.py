"""The one typed config tree shared by every entry point, assembled from the sections each component owns.

`load_config(path, overrides)` reads a YAML file into `Config`, applies `key.sub=value` overrides (values parsed
as YAML, then type-checked) and runs every section's checks; an unknown key, a wrong type, a value out of range or
a missing/unparsable file is one `ConfigError` naming the key (or file and line). Entry points parse their command
line with `pipeline.cli`. Importing this module imports no torch, Ray or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import Field

from data_prep.config import RenderConfig, SynthConfig
from pipeline.configlib import ConfigError, Section, load
from pipeline.data.config import DataConfig
from pipeline.evaluate.config import EvalConfig
from pipeline.export.config import ExportConfig
from pipeline.model.config import LoraConfig, ModelConfig
from pipeline.registry.config import PromoteConfig
from pipeline.serve.config import ServeConfig
from pipeline.train.config import LossConfig, TrackingConfig, TrainConfig

__all__ = [
    "Config", "ConfigError", "DataConfig", "EvalConfig", "ExportConfig", "LoraConfig", "LossConfig", "ModelConfig",
    "PromoteConfig", "RenderConfig", "ServeConfig", "SynthConfig", "TrackingConfig", "TrainConfig", "flatten",
    "load_config", "save_config", "to_dict",
]


class Config(Section):
    """The whole tree: one section per stage."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
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
    return load(root, path, overrides)


def to_dict(cfg: Any) -> dict:
    """The tree as plain YAML-able data (budgets as their text)."""
    return cfg.model_dump()


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (loads back to an equal Config)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
