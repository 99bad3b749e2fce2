"""Every shipped recipe in configs/ loads into the typed config tree (no stale or misspelt key)."""

from pathlib import Path

import pytest

from benchmarks.quality_experiment import ExperimentRunConfig
from pipeline.cli import RunConfig
from pipeline.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads(path):
    cfg = load_config(path, root=ExperimentRunConfig if path.name == "experiment.yaml" else RunConfig)
    assert cfg.model.dim in cfg.model.widths
    assert cfg.data.global_batch % cfg.train.chunk_size == 0
