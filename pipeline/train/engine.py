"""DeepSpeed set-up: fill a JSON config's "auto" fields from the run config, check the rest agrees, start the engine."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline.train.config import TrainingTree
from pipeline.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


def precision(dtype: str) -> str:
    """'bf16' or 'fp32' for a model dtype setting: auto means bf16 on CUDA, fp32 on CPU."""
    if dtype == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    if dtype in ("bfloat16", "bf16"):
        return "bf16"
    if dtype in ("float32", "fp32"):
        return "fp32"
    raise ValueError(f"model.dtype {dtype!r}: training supports auto, bfloat16 or float32")


def run_values(cfg: TrainingTree, world_size: int) -> dict[str, Any]:
    """The DeepSpeed keys that the run config owns, as dotted paths -> values."""
    if cfg.data.global_batch % world_size:
        raise ValueError(f"data.global_batch {cfg.data.global_batch} is not a multiple of {world_size} ranks")
    return {
        "train_batch_size": cfg.data.global_batch,
        "train_micro_batch_size_per_gpu": cfg.data.global_batch // world_size,
        "gradient_accumulation_steps": 1,  # the gradient cache replaces accumulation: one step per global batch
        "gradient_clipping": cfg.train.grad_clip,
        "bf16.enabled": precision(cfg.model.dtype) == "bf16",
    }


def _walk(tree: dict, prefix: str = ""):
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield from _walk(v, key)
        else:
            yield key, v


def fill_auto(ds: dict, cfg: TrainingTree, world_size: int) -> dict:
    """A copy of DeepSpeed config `ds` with every "auto" replaced from the run config.

    A key the run config owns that holds a value other than "auto" must equal the run's value; an "auto" the
    run config does not own, or an "optimizer"/"scheduler" section (built in code), is an error naming it.
    """
    out = json.loads(json.dumps(ds))
    for section in ("optimizer", "scheduler"):
        if section in out:
            raise ValueError(f"DeepSpeed config: remove '{section}' (train.optimizer / train.lr build it)")
    values = run_values(cfg, world_size)
    for key, value in _walk(ds):
        if value == "auto" and key not in values:
            raise ValueError(f"DeepSpeed config: no run setting fills '{key}': \"auto\"")
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        if node.get(leaf, "auto") != "auto" and node[leaf] != value:
            raise ValueError(f"DeepSpeed config: '{key}' is {node[leaf]!r} but the run config gives {value!r}")
        node[leaf] = value
    return out


def load_ds_config(cfg: TrainingTree, world_size: int) -> dict:
    """Read `train.deepspeed_config` and fill it for this run."""
    return fill_auto(json.loads(Path(cfg.train.deepspeed_config).read_text()), cfg, world_size)


def clear_stale_grads(engine: Any) -> None:
    """Zero ZeRO-3's gradient partitions before a step's first backward (a no-op for other stages).

    Why (DeepSpeed 0.19.8, runtime/zero/stage3.py): each rank keeps its share of every parameter's gradient in
    one flat buffer that lives across steps. `partition_grads` copies a reduced gradient into it when the optimizer's
    `micro_step_id` is 0 and adds to it otherwise; `micro_step_id` counts the backward calls since the last step,
    and nothing else ever clears the buffer. That is right only when every parameter receives its gradient in the
    step's first backward. A gradient-cached step makes one backward per chunk, and with sampled budgets some
    parameters get no gradient at all, so two things went wrong from step 2 on (step 1 starts from the zeros the
    buffer was allocated with, as does the first step after a resume):
    - a parameter first reached by a later backward (the vision tower, when the query chunks were replayed first)
      was added onto the previous step's gradient;
    - a parameter no backward reached (an exit head that no budget of the step used) kept the previous step's
      gradient, and the optimizer applied it again, in the plain step too.
    With the buffer zeroed, copy and add agree for every parameter, and an unused parameter's gradient is zero (as
    under ZeRO-2 and DDP). With CPU optimizer offload the fp32 gradient partitions persist the same way (only
    parameters reached in the step are copied there), so they are zeroed too.
    """
    optimizer = getattr(engine, "optimizer", None)
    buffer = getattr(optimizer, "grad_partitions_flat_buffer", None)
    if buffer is None:
        return
    buffer.zero_()
    if getattr(optimizer, "offload_optimizer", False):
        for flat in optimizer.fp32_partitioned_groups_flat:
            if flat.grad is not None:
                flat.grad.zero_()


def import_deepspeed():
    """The deepspeed module. Imported first here, it comes without MLflow: deepspeed.autotuning (never used here)
    imports MLflow when installed, 1.0 of DeepSpeed's 1.3 s import on every rank, though only rank 0 tracks."""
    if "deepspeed" not in sys.modules and "mlflow" not in sys.modules:
        sys.modules["mlflow"] = None  # `import mlflow` raises ImportError: the autotuner sets has_mlflow = False
        try:
            import deepspeed
        finally:
            del sys.modules["mlflow"]  # a later `import mlflow` (rank 0's tracker) imports it as usual
    import deepspeed

    return deepspeed


def build_engine(model: torch.nn.Module, cfg: TrainingTree, world_size: int) -> tuple[Any, dict]:
    """Wrap `model` in a DeepSpeed engine with our optimizer and schedule; returns (engine, filled DS config)."""
    deepspeed = import_deepspeed()  # training only: evaluation, export and serving never import DeepSpeed
    ds = load_ds_config(cfg, world_size)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds)
    log.info("DeepSpeed ZeRO stage %s, %s, micro batch %d on %d ranks", ds.get("zero_optimization", {}).get("stage"),
             precision(cfg.model.dtype), ds["train_micro_batch_size_per_gpu"], world_size)
    return engine, ds
