"""The config tree: YAML + dotted overrides, type checks, unknown keys named, round trip."""

import pytest

from pipeline.config import Config, ConfigError, load_config, save_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  steps: 7\nmodel:\n  dim: 64\n  widths: [64, 16]\n")
    cfg = load_config(p, ["train.lr=0.001", "loss.temperature=1", "model.exits=[1, 2]"])
    assert cfg.train.steps == 7 and cfg.model.widths == [64, 16]
    assert cfg.train.lr == 0.001 and isinstance(cfg.loss.temperature, float)
    assert cfg.model.exits == [1, 2]
    assert cfg.data.global_batch == Config().data.global_batch  # untouched default


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(p)
    with pytest.raises(ConfigError, match="nosuch"):
        load_config(None, ["nosuch.key=1"])


def test_bad_type_is_named():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"model.widths\[1\]"):
        load_config(None, ["model.widths=[1, x]"])


def test_round_trip(tmp_path):
    cfg = load_config(None, ["train.steps=3", "export.budgets={a: L1-d16-p2, b: full, c: d32-p4-int8}", "train.curve_budgets=[L2-d32-p2-bin]"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
