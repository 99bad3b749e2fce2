"""Per-GPU memory of a step under the configured DeepSpeed ZeRO stage and offload: parameters (partition and the
ZeRO-3 gathered working set), gradients (partition and in flight), optimizer states and the step's temporaries,
one chunk's activations (with and without gradient checkpointing), the gathered page vectors of the global batch,
this rank's input batch, and a fixed runtime reserve. The terms are added: a conservative peak.

Model states follow DeepSpeed's own accounting (stage3.estimate_zero3_model_states_mem_needs: 18 bytes per
trained parameter in bf16 with AdamW = 2 parameter + 4 fp32 gradient + 12 fp32 master, m and v), split here into
trained and frozen parameters (a frozen one keeps only its b-byte partition).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.plan.activations import chunk_bytes
from pipeline.plan.shape import ModelShape
from pipeline.plan.workload import Workload

GIB = 2**30
RUNTIME_GIB = 2.0  # CUDA context, NCCL buffers and allocator slack on a GPU (not in torch's own counters)
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "sgd": 0}  # state per trained parameter, before a master copy


@dataclass
class Zero:
    """The ZeRO knobs of a DeepSpeed JSON that size memory."""

    stage: int
    offload_param: bool
    offload_optimizer: bool
    max_live: int  # stage3_max_live_parameters
    prefetch: int  # stage3_prefetch_bucket_size
    reduce_bucket: int
    persistence: int  # stage3_param_persistence_threshold

    @classmethod
    def from_file(cls, path: str | Path) -> "Zero":
        z = json.loads(Path(path).read_text()).get("zero_optimization", {})

        def on(key: str) -> bool:
            return z.get(key, {}).get("device", "none") in ("cpu", "nvme")

        return cls(int(z.get("stage", 0)), on("offload_param"), on("offload_optimizer"),
                   int(z.get("stage3_max_live_parameters", 1e9)), int(z.get("stage3_prefetch_bucket_size", 5e7)),
                   int(z.get("reduce_bucket_size", 5e8)), int(z.get("stage3_param_persistence_threshold", 1e5)))


def model_states(s: ModelShape, zero: Zero, b: int, optimizer: str, world: int) -> dict[str, float]:
    """Bytes per GPU: params (own partition), params_gathered (ZeRO-3 live working set), grads, optimizer."""
    n, t = s.params_total, s.params_trainable
    master = 4 if b < 4 else 0  # fp32 master weights under mixed precision
    shard = world if zero.stage >= 3 else 1
    params = 0.0 if zero.offload_param else n * b / shard
    gathered = 0.0
    if zero.stage >= 3:  # gathered layers stay live until max_live; small tensors are never partitioned
        gathered = (min(n, zero.max_live + zero.prefetch) + s.small_params) * b
    grad_shard = world if zero.stage >= 2 else 1
    # Plus, in flight: the parameters' own .grad tensors and the reduce bucket they are copied into.
    grads = (0.0 if zero.offload_optimizer else t * 4 / grad_shard) + 2 * min(zero.reduce_bucket, t) * b
    opt_shard = world if zero.stage >= 1 else 1
    optim = 0.0 if zero.offload_optimizer else t * (OPTIMIZER_BYTES[optimizer] + master) / opt_shard
    # torch's multi-tensor AdamW makes fp32 temporaries over the whole partition while it steps (about two).
    step = 0.0 if zero.offload_optimizer or optimizer == "sgd" else 2 * t * 4 / opt_shard
    return {"params": params, "params_gathered": gathered, "grads": grads, "optimizer": optim,
            "optimizer_step": step}


def loss_bytes(s: ModelShape, w: Workload, b: int, budgets: list) -> float:
    """The gradient cache's page vectors: this rank's cached leaves (every exit), the gathered global batch and
    its gradient, plus per trained budget the width-sliced / pooled copy, MaxSim's masked operand and their
    gradients; the query side is small (max_query_tokens per query)."""
    exits = len({x.layers for x in budgets})
    full = w.page_tokens * s.dim * b
    out = exits * (w.local_batch + 2 * w.global_batch) * full
    for x in budgets:
        out += 3 * w.global_batch * (w.page_tokens / x.pool**2) * (x.dim + 1) * b
    return out


def cpu_offload_bytes(s: ModelShape, zero: Zero, optimizer: str) -> float:
    """Host memory the offloaded states need, whole job (divide by nodes), with DeepSpeed's 1.5 buffer factor."""
    per = (4 + OPTIMIZER_BYTES[optimizer] + 4) if zero.offload_optimizer else 0  # fp32 grad, state, master
    return 1.5 * (s.params_trainable * per + (s.params_total * 2 if zero.offload_param else 0))


def gpu_memory(s: ModelShape, w: Workload, zero: Zero, b: int, optimizer: str, checkpointing: bool,
               attn: str, budgets: list, runtime_gib: float = RUNTIME_GIB) -> dict[str, float]:
    """GiB per GPU by term; `activations` is the configured mode, the other mode is listed beside it."""
    terms = {k: v / GIB for k, v in model_states(s, zero, b, optimizer, w.world).items()}
    with_ckpt = chunk_bytes(s, b, w, True, attn) / GIB
    without = chunk_bytes(s, b, w, False, attn) / GIB
    terms["activations"] = with_ckpt if checkpointing else without
    terms["page_vectors"] = loss_bytes(s, w, b, budgets) / GIB
    terms["inputs"] = w.local_batch * (w.page_patches * s.tower.patch_dim * b + 8 * 4 * w.page_seq) / GIB
    terms["runtime"] = runtime_gib
    terms["total"] = sum(terms.values())
    terms["activations_with_checkpointing"] = with_ckpt
    terms["activations_without_checkpointing"] = without
    return terms
