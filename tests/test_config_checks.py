"""Every enumerated setting, range and cross-field rule is checked when the config is built (from YAML, overrides
or code), with one message naming the key; files that are missing or not YAML name the file and line."""

import typing

import pytest

from benchmarks.quality_experiment import ExperimentRunConfig
from pipeline.cli import RunConfig
from pipeline.config import ConfigError, load_config
from pipeline.configlib import FieldError, is_section
from pipeline.model.config import ModelConfig
from pipeline.train.config import LossConfig

EXPECTED_BUDGET = "(expected like 'L4-d128-p1', 'L2-d32-p2-bin', 'd32-p2' (the deepest exit) or 'full')"
BAD = [  # (override, the whole message)
    ("loss.budgets=foo", "loss.budgets: 'foo' is not one of 'grid', '2d', 'full', 'diagonal', 'only'"),
    ("train.optimizer=adam", "train.optimizer: 'adam' is not one of 'adamw', 'adamw8bit', 'sgd'"),
    ("model.dtype=foo", "model.dtype: 'foo' is not one of 'auto', 'float32', 'bfloat16', 'float16'"),
    ("model.quantization=2bit", "model.quantization: '2bit' is not one of 'none', '8bit', '4bit'"),
    ("model.attn_implementation=flash", "model.attn_implementation: 'flash' is not one of 'auto', 'sdpa', 'eager', "
                                        "'flash_attention_2'"),
    ("eval.precisions=[fp16, int4]", "eval.precisions[1]: 'int4' is not one of 'fp16', 'int8', 'bin'"),
    ("eval.precisions=[bin, bin]", "eval.precisions: must name each precision once, got ['bin', 'bin']"),
    ("export.budgets={a: L2-d32-p2-int4}", "export.budgets.a: unknown precision 'int4' (known: fp16, int8, bin)"),
    ("export.budgets={a: L2-dbin-p2}", "export.budgets.a: not a budget: 'L2-dbin-p2' " + EXPECTED_BUDGET),
    ("render.image_format=webp", "render.image_format: 'webp' is not one of 'png', 'jpeg'"),
    ("render.split_by=folder", "render.split_by: 'folder' is not one of 'hash', 'path'"),
    ("synth.layout=spiral", "synth.layout: 'spiral' is not one of 'grid', 'free', 'rich'"),
    ("data.global_batch=0", "data.global_batch: must be >= 1, got 0"),
    ("render.shard_size=0", "render.shard_size: must be >= 1, got 0"),
    ("loss.temperature=0", "loss.temperature: must be > 0, got 0.0"),
    ("loss.temperature=-1", "loss.temperature: must be > 0, got -1.0"),
    ("train.steps=-5", "train.steps: must be >= 1, got -5"),
    ("train.lr=0", "train.lr: must be > 0, got 0.0"),
    ("train.dist_timeout_s=0", "train.dist_timeout_s: must be > 0, got 0.0"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints: must be >= 1, got 0"),
    ("render.eval_fraction=1.5", "render.eval_fraction: must be in [0, 1], got 1.5"),
    ("render.jpeg_quality=0", "render.jpeg_quality: must be in [1, 100], got 0"),
    ("model.widths=[128, 0]", "model.widths[1]: must be >= 1, got 0"),
    ("model.dim=100", "model.dim: 100 is not one of widths [128, 64, 32, 16]"),
    ("model.widths=[256, 128]", "model.widths: 256 exceeds dim 128"),
    ("model.pools=[]", "model.pools: must not be empty"),
    ("model.lora.r=-1", "model.lora.r: must be >= 0, got -1"),
    ("eval.run_depth=5", "eval.run_depth: must be >= 10, got 5"),
    ("eval.max_pages=0", "eval.max_pages: must be >= 1, got 0"),
    ("export.budgets={a: L2-d0-p1}", "export.budgets.a: layers, dim and pool must be >= 1, got (2, 0, 1)"),
    ("export.budgets={a: L-1-d32-p1}", "export.budgets.a: not a budget: 'L-1-d32-p1' " + EXPECTED_BUDGET),
    ("export.budgets={a: [0, 32, 2]}", "export.budgets.a: not a budget: [0, 32, 2] " + EXPECTED_BUDGET),  # the old spelling
    ("export.budgets={'': full}", "export.budgets: a variant name must not be empty"),
    ("loss.only=L2-d32-p0", "loss.only: layers, dim and pool must be >= 1, got (2, 32, 0)"),
    ("train.curve_budgets=[full, L2-d32]", "train.curve_budgets[1]: not a budget: 'L2-d32' " + EXPECTED_BUDGET),
    ("train.chunk_size=0", "train.chunk_size: must be >= 1, got 0"),
    ("promote.version=0", "promote.version: must be >= 1, got 0"),
    ("serve.port=70000", "serve.port: must be in [0, 65535], got 70000"),
    ("serve.max_rows=0", "serve.max_rows: must be >= 1, got 0"),
    ("synth.queries_per_page=3", "synth.queries_per_page: 3 exceeds codes_per_page 2"),
    ("tracking.tracking_uri=postgresql://db/mlflow",
     "tracking.artifact_location: a postgresql store needs it (else artifacts land in the current directory)"),
    ("train.steps=many", "train.steps: expected int, got 'many'"),
    ("train.stepz=1", "unknown config key 'train.stepz' (known: checkpoint_every, chunk_size, curve_budgets, deepspeed_config, "
                      "dist_timeout_s, eval_every, grad_cache, grad_clip, keep_checkpoints, log_every, lr, optimizer, "
                      "output_dir, seed, steps, warmup_steps, weight_decay)"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override], root=RunConfig)
    assert str(err.value) == message


def test_checks_run_when_built_in_code_too():
    with pytest.raises(FieldError, match=r"^temperature: must be > 0, got 0.0$"):  # shown as the float it is
        LossConfig(temperature=0)
    with pytest.raises(FieldError, match=r"^dim: 7 is not one of widths"):
        ModelConfig(dim=7)
    with pytest.raises(TypeError):  # keyword-only: no positional mix-ups
        LossConfig(0.05)


def test_a_good_override_still_loads():
    cfg = load_config(None, ["loss.budgets=2d", "model.dim=32", "model.widths=[32, 16]", "model.dtype=float32"])
    assert cfg.loss.budgets == "2d" and cfg.model.dim == 32
    # YAML 1.1 reads 3e-4 (no dot) as a string; a float setting takes it as the number users mean.
    assert load_config(None, ["train.lr=3e-4", "loss.temperature=5E-2"]).train.lr == 3e-4
    with pytest.raises(ConfigError, match="train.lr: expected float, got '3e-4x'"):
        load_config(None, ["train.lr=3e-4x"])


def test_experiment_recipes_are_checked_as_run_configs():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["experiment.recipes={a: [loss.budgets=x]}", "experiment.last_head_recipes=[]",
                           "experiment.default_recipe=a", "experiment.baseline=a"], root=ExperimentRunConfig)
    assert str(err.value) == "experiment.recipes.a: loss.budgets: 'x' is not one of 'grid', '2d', 'full', 'diagonal', 'only'"
    with pytest.raises(ConfigError, match=r"experiment.default_recipe: \['b'\] are not recipes \(truncation, "):
        load_config(None, ["experiment.default_recipe=b"], root=ExperimentRunConfig)
    with pytest.raises(ConfigError, match="unknown config key 'experiment'"):
        load_config(None, ["experiment.parallel=1"])  # the pipeline's own tree has no experiment section


def test_missing_file_and_yaml_error_name_file_and_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert str(err.value) == f"{tmp_path / 'nope.yaml'}: no such config file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 3\n  lr: [1, 2\nmodel:\n  dim: 32\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"{bad}:4:") and "YAML error" in str(err.value)
    assert "\n" not in str(err.value)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def _sections(cls):
    yield cls
    for info in cls.model_fields.values():
        if is_section(info.annotation):
            yield from _sections(info.annotation)


ENUMERATED = ["loss.budgets", "train.optimizer", "model.dtype", "model.quantization", "model.attn_implementation", "loss.qat",
              "render.image_format", "render.split_by", "synth.layout"]


def test_every_field_is_documented_and_enumerations_are_literals():
    for cls in _sections(ExperimentRunConfig):
        for name, info in cls.model_fields.items():
            if not is_section(info.annotation):
                assert info.description, f"{cls.__name__}.{name} has no docstring (its --help text)"
    for key in ENUMERATED:
        section, name = key.split(".")
        tp = RunConfig.model_fields[section].annotation.model_fields[name].annotation
        assert typing.get_origin(tp) is typing.Literal, key
        for value in typing.get_args(tp):  # every listed value loads
            needs = ["loss.only=L2-d32-p2"] if f"{key}={value}" == "loss.budgets=only" else []
            cfg = load_config(None, [f"{key}={value}", "synth.page_size=448", *needs], root=RunConfig)  # rich needs the larger page
            assert getattr(getattr(cfg, section), name) == value
