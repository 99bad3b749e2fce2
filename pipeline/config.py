"""The one typed config tree shared by every entry point: dataclasses loaded from YAML plus dotted overrides.

Each stage owns one section. `load_config(path, overrides)` reads a YAML file into `Config`,
applies `key.sub=value` overrides (values parsed as YAML, then type-checked), and rejects an
unknown key with one error naming it. `parse_cli(argv)` is the shared command line:
`--config FILE` followed by dotted overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the tree (names the bad key)."""


@dataclass
class SynthConfig:
    """Deterministic synthetic corpus (data_prep/synth.py)."""

    out_dir: str = "demo_out/corpus"
    n_docs: int = 40
    pages_per_doc: int = 3
    page_size: int = 112  # page side in points (1 pt = 1 px at 72 dpi)
    codes_per_page: int = 2
    code_len: int = 3
    vocab_size: int = 400  # distinct codes
    font_size: int = 20
    layout: str = "grid"  # grid: codes on token-aligned rows; free: random horizontal offset; rich: tables/charts too
    queries_per_page: int = 1
    seed: int = 0
    codes_per_page_max: int = 3  # >codes_per_page: each page gets a uniform count in [codes_per_page, this]
    pages_per_doc_max: int = 0  # >pages_per_doc: each document gets a uniform count in [pages_per_doc, this]
    row_px: int = 28  # code rows (and grid columns) in px: patch 14 x merge 2 of Qwen2-VL
    unique_codes: bool = True  # each page's answer codes appear on no other page (exact relevance)
    vocab_seed: int = 0  # the code vocabulary; keep it equal across train and eval corpora
    fact_queries: bool = False  # rich layout: add one natural-language query per page


@dataclass
class RenderConfig:
    """The render job (data_prep/render.py): documents -> WebDataset shards."""

    input: str = "demo_out/corpus"  # a directory tree of PDFs, a list file of paths, or a Parquet file/dir
    output: str = "demo_out/shards"
    queries: str | None = None  # JSON lines {doc, page, query}; default: <input>/queries.jsonl when present
    dpi: int = 72
    max_pixels: int = 1_000_000  # cap on width*height; DPI is lowered to fit
    image_format: str = "png"  # png (lossless) or jpeg
    jpeg_quality: int = 90
    shard_size: int = 256  # samples per shard
    eval_fraction: float = 0.2  # of documents, never of pages
    split_seed: int = 0
    pages_per_task: int = 16
    max_in_flight: int = 8  # Ray tasks in flight
    max_file_mb: float = 512.0  # larger files are rejected
    ray_address: str | None = None  # None: connect to RAY_ADDRESS or start Ray locally
    num_cpus: int | None = None  # for a local Ray
    png_compress_level: int = 6  # zlib level for PNG (0-9); lossless at every level
    object_store_mb: int | None = None  # object store of a local Ray; None: Ray's default
    progress: bool = True  # tqdm bar of pages done (stderr)
    split_by: str = "hash"  # hash: seeded split by document; path: train/ and test|eval|val/ folders (and HF
    # train-*.parquet / test-*.parquet names) decide, other documents fall back to the seeded split


@dataclass
class LoraConfig:
    r: int = 0  # 0 disables LoRA
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    """The budget-elastic retriever (pipeline/model)."""

    name_or_path: str = "demo_out/tiny-qwen2vl"  # local dir or hub name
    dim: int = 128  # full width of every exit head
    exits: list[int] | None = None  # decoder layers with a head; None: L/4, L/2, 3L/4, L
    widths: list[int] = field(default_factory=lambda: [128, 64, 32, 16])
    pools: list[int] = field(default_factory=lambda: [1, 2, 4])
    attn_implementation: str = "auto"  # auto: flash_attention_2 on CUDA when installed, else sdpa
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    quantization: str = "none"  # none | 8bit | 4bit (bitsandbytes)
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    max_query_tokens: int = 32
    query_prefix: str = ""  # text before each query (e.g. "Query: "); its tokens are never vectors
    head_seed: int = 0  # fresh exit heads are drawn from this seed (the same on every rank)
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass
class LossConfig:
    """The width x depth x count Matryoshka objective (pipeline/train/loss.py)."""

    temperature: float = 0.02
    budgets: str = "grid"  # grid: every (exit, width, pool); 2d: pool 1 only; full: the full budget only
    sample_k: int = 0  # 0: every budget each step; k: the full budget plus k sampled ones
    full_weight: float = 1.0
    small_weight: float = 1.0  # weight of every other budget
    distill_weight: float = 0.0  # KL of each smaller budget's scores towards the full budget's
    distill_temperature: float = 1.0
    normalize: bool = True  # divide the weighted sum by the sum of weights (scale independent of #budgets)
    sample_seed: int = 0  # sample_k draws are seeded by (sample_seed, step): the same on every rank


@dataclass
class DataConfig:
    """The training stream (pipeline/data)."""

    shards: str = "demo_out/shards"  # directory holding manifest.json
    split: str = "train"
    global_batch: int = 16  # query/page pairs per optimizer step, over all ranks
    chunk_size: int = 4  # pairs per gradient-cache chunk on one rank
    num_workers: int = 0
    seed: int = 0
    verify_checksums: bool = False  # sha256 of every shard against the manifest at start (sizes always checked)


@dataclass
class TrainConfig:
    """The training loop (pipeline/train)."""

    output_dir: str = "demo_out/run"
    steps: int = 100
    lr: float = 2e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    optimizer: str = "adamw"  # adamw | adamw8bit
    deepspeed_config: str = "deepspeed_configs/zero3.json"
    grad_cache: bool = True
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10


@dataclass
class TrackingConfig:
    """MLflow tracking and registry."""

    tracking_uri: str = "sqlite:///demo_out/mlruns.db"
    experiment: str = "budget-elastic-retrieval"
    run_name: str | None = None
    registered_model: str = "retriever-tiny"
    system_metrics: bool = True


@dataclass
class EvalConfig:
    """Budget-grid evaluation (pipeline/evaluate)."""

    shards: str | None = None  # None: data.shards
    split: str = "eval"
    parquet: str | None = None  # a page-image Parquet set with queries and qrels instead of shards
    batch_size: int = 16
    output_dir: str | None = None  # None: <train.output_dir>/eval
    max_pages: int | None = None
    model: str | None = None  # a saved Retriever dir; None: <train.output_dir>/final
    run_depth: int = 100  # pages kept per query in the ranked run (metrics need <= 10)
    index_dtype: str = "float16"  # storage dtype that bytes/page counts (float32, float16, bfloat16, int8)
    timing_pages: int = 16  # pages encoded per exit to measure encode time per page
    log_mlflow: bool = True  # log table, plot and metrics to the training run (<train.output_dir>/run.json)
    progress: bool = True  # tqdm bars over pages and budgets (stderr)


@dataclass
class ExportConfig:
    """Budget variants (pipeline/export)."""

    output_dir: str | None = None  # None: <train.output_dir>/variants
    budgets: dict[str, list[int]] = field(
        default_factory=lambda: {"full": [0, 128, 1], "balanced": [0, 32, 2], "tiny": [0, 16, 4]}
    )  # name -> [layers (0: last exit), dim, pool]
    model: str | None = None  # a saved Retriever dir; None: <train.output_dir>/final
    results: str | None = None  # eval results.json with the cards' quality; None: <eval output_dir>/results.json
    register: bool = True  # register each variant as a version of tracking.registered_model


@dataclass
class PromoteConfig:
    """Gated alias promotion (pipeline/promote.py)."""

    tolerance: float = 0.005  # a tie within this nDCG@5 still promotes
    dry_run: bool = False
    alias: str | None = None  # e.g. full, balanced, tiny
    version: int | None = None  # the candidate version (or give max_bytes_per_page)
    max_bytes_per_page: float | None = None  # pick the best version whose bytes/page is at most this


@dataclass
class ServeConfig:
    """Serving a registered variant: the pyfunc over HTTP, and an on-disk index with top-k search (pipeline/serve)."""

    alias: str = "balanced"
    model_uri: str | None = None  # None: models:/<tracking.registered_model>@<alias>
    index_dir: str = "demo_out/index"
    shards: str | None = None  # pages to index; None: eval.shards, else data.shards
    split: str = "eval"
    batch_size: int = 16
    queries: list[str] = field(default_factory=list)
    k: int = 5
    host: str = "127.0.0.1"
    port: int = 5001


@dataclass
class ExperimentConfig:
    """The quality experiment (benchmarks/quality_experiment.py): recipes x seeds through the real training path."""

    out_dir: str = "experiment_out"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    recipes: dict[str, list[str]] = field(
        default_factory=lambda: {
            "truncation": ["loss.budgets=full"],
            "2d": ["loss.budgets=2d", "loss.sample_k=6"],
            "3d": ["loss.budgets=grid", "loss.sample_k=6"],
            "3d+distill": ["loss.budgets=grid", "loss.sample_k=6", "loss.distill_weight=1.0"],
        }
    )  # name -> dotted overrides of the run config
    last_head_recipes: list[str] = field(default_factory=lambda: ["truncation"])  # evaluated with the last head at every exit
    eval_docs: int = 67  # held-out documents of a separate corpus (unique answer codes)
    parallel: int = 2  # runs at once (each a single-rank DeepSpeed process)


@dataclass
class Config:
    synth: SynthConfig = field(default_factory=SynthConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


def _check(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check(value, arm, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arm,) = typing.get_args(tp)
        return [_check(v, arm, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_check(k, kt, key): _check(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(names))})")
        kwargs[k] = _check(v, hints[k], key)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML at `path` (or the defaults) and apply `key.sub=value` overrides; type-checked."""
    tree: dict = {}
    if path is not None:
        with open(path) as f:
            tree = yaml.safe_load(f) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else None)
    return _build(Config, tree)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
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


def parse_cli(
    argv: list[str] | None = None, description: str = "", shortcuts: dict[str, str] | None = None
) -> Config:
    """The shared command line: `--config FILE [key.sub=value ...]`.

    `shortcuts` maps extra flags to config keys, e.g. {"--input": "render.input"}.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML config file (default: embedded defaults)")
    for flag, key in (shortcuts or {}).items():
        parser.add_argument(flag, dest=key.replace(".", "__"), default=None, help=f"same as {key}=VALUE")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=10")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in (shortcuts or {}).items():
        value = getattr(args, key.replace(".", "__"))
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        return load_config(args.config, overrides)
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
