"""DeepSpeed JSON configs: every "auto" is filled from the run config, and filled values agree with it."""

import json
from pathlib import Path

import pytest

from pipeline.cli import RunConfig
from pipeline.config import load_config
from pipeline.train.engine import fill_auto, load_ds_config

ROOT = Path(__file__).resolve().parents[2]
DS = sorted((ROOT / "deepspeed_configs").glob("*.json"))


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        yield from (_leaves(v, key) if isinstance(v, dict) else [(key, v)])


@pytest.mark.parametrize("path", DS, ids=lambda p: p.name)
@pytest.mark.parametrize("world", [1, 2, 8])
def test_auto_fields_follow_the_run_config(path, world):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.global_batch=32", "train.grad_clip=0.5"], root=RunConfig)
    cfg.train.deepspeed_config = str(path)
    ds = load_ds_config(cfg, world)
    assert "auto" not in [v for _, v in _leaves(ds)]
    assert ds["train_batch_size"] == 32
    assert ds["train_micro_batch_size_per_gpu"] * world * ds["gradient_accumulation_steps"] == 32
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is False  # CPU: fp32
    assert ds["zero_optimization"]["stage"] == (2 if "zero2" in path.name else 3)
    if "offload" in path.name:
        assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_disagreeing_or_unknown_values_are_refused():
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.global_batch=16"], root=RunConfig)
    base = json.loads((ROOT / "deepspeed_configs" / "zero3.json").read_text())
    with pytest.raises(ValueError, match="train_batch_size"):
        fill_auto({**base, "train_batch_size": 64}, cfg, 2)
    assert fill_auto({**base, "train_batch_size": 16}, cfg, 2)["train_micro_batch_size_per_gpu"] == 8
    with pytest.raises(ValueError, match="optimizer"):
        fill_auto({**base, "optimizer": {"type": "AdamW"}}, cfg, 2)
    with pytest.raises(ValueError, match="reduce_bucket_size"):
        fill_auto({**base, "zero_optimization": {"reduce_bucket_size": "auto"}}, cfg, 2)
    with pytest.raises(ValueError, match="multiple"):
        fill_auto(base, cfg, 3)
