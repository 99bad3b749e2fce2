"""The plan of one config on one cluster: a JSON-able dict, a table for people, and the one-line refusal when it
does not fit (naming the largest term and what to change)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.cli import RunConfig
from pipeline.plan import flops as fl
from pipeline.plan.config import H100_BF16_TFLOPS
from pipeline.plan.memory import RUNTIME_GIB, Zero, cpu_offload_bytes, gpu_memory
from pipeline.plan.shape import model_shape
from pipeline.plan.workload import make_workload

MFUS = (0.3, 0.4, 0.5)


@dataclass
class Cluster:
    nodes: int = 8
    gpus_per_node: int = 8
    gpu_memory_gib: float = 80.0
    peak_tflops: float = H100_BF16_TFLOPS  # per GPU, for MFU
    runtime_gib: float = RUNTIME_GIB

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def dtype_bytes(dtype: str) -> int:
    """The plan is for GPUs: auto means bfloat16 there."""
    return 4 if dtype in ("float32", "fp32") else 2


def budgets_of(cfg: RunConfig, exits: list[int]) -> list:
    from pipeline.model.budgets import budget_grid
    from pipeline.train.loss import select_budgets

    return select_budgets(budget_grid(exits, cfg.model.widths, cfg.model.pools), cfg.loss, 0)


def make_plan(cfg: RunConfig, cluster: Cluster) -> dict:
    """Everything the plan reports, as plain numbers (GiB, FLOPs, seconds)."""
    zero = Zero.from_file(cfg.train.deepspeed_config)
    shape = model_shape(cfg.model, zero.persistence if zero.stage >= 3 else 0)
    w = make_workload(cfg, shape, cluster.gpus)
    budgets = budgets_of(cfg, shape.exits)
    b = dtype_bytes(cfg.model.dtype)
    ckpt, cache = cfg.model.gradient_checkpointing, cfg.train.grad_cache
    flops = fl.step_flops(shape, w, len(budgets), ckpt, cache)
    attn = "eager" if cfg.model.attn_implementation == "eager" else "sdpa"
    memory = gpu_memory(shape, w, zero, b, cfg.train.optimizer, ckpt, attn, budgets, cluster.runtime_gib)
    peak = cluster.peak_tflops * 1e12 * cluster.gpus
    step = {f"{int(m * 100)}%": flops["model"] / (m * peak) for m in MFUS}
    return {
        "config": {"model": cfg.model.name_or_path, "architecture": shape.source, "arch": shape.arch,
                   "deepspeed": cfg.train.deepspeed_config, "zero": dataclasses.asdict(zero),
                   "dtype": "bfloat16" if b == 2 else "float32", "lora_r": shape.lora_r,
                   "gradient_checkpointing": ckpt, "grad_cache": cache, "optimizer": cfg.train.optimizer},
        "cluster": dataclasses.asdict(cluster) | {"gpus": cluster.gpus},
        "params_total": shape.params_total, "params_trainable": shape.params_trainable,
        "params": {"vision": shape.params_vision, "heads": shape.params_heads, "lora": shape.params_lora,
                   "largest_tensor": shape.largest_tensor},
        "batch": dataclasses.asdict(w), "budgets_per_step": len(budgets),
        "tokens_per_step": w.tokens_per_step, "image_patches_per_step": w.global_batch * w.page_patches,
        "flops_per_step": flops,
        "gpu_memory_gib": memory,
        "fits": memory["total"] <= cluster.gpu_memory_gib,
        "peak_tflops_per_gpu": cluster.peak_tflops,
        "step_seconds": step,
        "hfu_at_mfu": {k: round(float(k[:-1]) / 100 * flops["total"] / flops["model"], 3) for k in step},
        "run_hours_at_40%": step["40%"] * cfg.train.steps / 3600,
        "pages_per_second_per_gpu_at_40%": w.local_batch / step["40%"],
        "cpu_offload_gib_per_node": cpu_offload_bytes(shape, zero, cfg.train.optimizer) / 2**30 / cluster.nodes,
    }


def advice(plan: dict, cfg: RunConfig, cluster: Cluster) -> str:
    """One line: why the config does not fit and what to change."""
    mem = plan["gpu_memory_gib"]
    terms = {k: v for k, v in mem.items() if k in ("params", "params_gathered", "grads", "optimizer", "activations",
                                                   "page_vectors")}
    worst = max(terms, key=terms.get)
    head = (f"does not fit: {mem['total']:.1f} GiB per GPU > {cluster.gpu_memory_gib:g} GiB; largest term {worst} "
            f"({terms[worst]:.1f} GiB)")
    if worst == "activations":
        fitting = _chunk_that_fits(plan, cfg, cluster)
        fix = [f"train.chunk_size={fitting}" if fitting else "train.chunk_size=1 (still too large)"]
        if not cfg.train.grad_cache:  # without the cache the whole local batch is one graph
            fix[0] = "train.grad_cache=true with " + fix[0]
        if not cfg.model.gradient_checkpointing:
            fix.append("model.gradient_checkpointing=true")
        fix.append("a lower model.max_pixels")
    elif worst in ("params", "grads", "optimizer"):
        fix = ["train.deepspeed_config=deepspeed_configs/zero3_offload.json (offload)", "LoRA (model.lora.r=32)",
               "more GPUs"]
        if cfg.train.optimizer == "adamw":
            fix.insert(2, "train.optimizer=adamw8bit")
    elif worst == "params_gathered":
        fix = ["a lower stage3_max_live_parameters in the DeepSpeed config"]
    else:
        fix = ["a lower data.global_batch", "a lower model.max_pixels", "loss.sample_k"]
    return head + ": try " + ", or ".join(fix)


def _chunk_that_fits(plan: dict, cfg: RunConfig, cluster: Cluster) -> int | None:
    """The largest gradient-cache chunk below the configured one at which the whole step fits, or None."""
    from pipeline.plan.activations import chunk_bytes
    from pipeline.plan.workload import Workload

    zero = Zero(**plan["config"]["zero"])
    shape = model_shape(cfg.model, zero.persistence if zero.stage >= 3 else 0)
    mem, b = plan["gpu_memory_gib"], dtype_bytes(cfg.model.dtype)
    rest = mem["total"] - mem["activations"]
    for chunk in range(plan["batch"]["chunk"] - 1, 0, -1):
        w = Workload(**{**plan["batch"], "chunk": chunk})
        if rest + chunk_bytes(shape, b, w, cfg.model.gradient_checkpointing) / 2**30 <= cluster.gpu_memory_gib:
            return chunk
    return None


def table(plan: dict) -> str:
    """The plan as aligned text lines."""
    c, m, f, cl = plan["config"], plan["gpu_memory_gib"], plan["flops_per_step"], plan["cluster"]
    w = plan["batch"]
    rows = [
        ("model", f"{c['model']} ({c['arch']}, {c['dtype']}, LoRA r={c['lora_r']}, {c['deepspeed']})"),
        ("parameters", f"{plan['params_total'] / 1e9:.3f} B total, {plan['params_trainable'] / 1e6:.1f} M trainable "
                       f"(vision {plan['params']['vision'] / 1e6:.0f} M, heads {plan['params']['heads'] / 1e6:.2f} M)"),
        ("cluster", f"{cl['nodes']} x {cl['gpus_per_node']} GPUs, {cl['gpu_memory_gib']:g} GiB, "
                    f"peak {cl['peak_tflops']:g} TFLOP/s each"),
        ("batch", f"global {w['global_batch']}, {w['local_batch']} per GPU, chunk {w['chunk']}; page {w['page_tokens']} "
                  f"image tokens ({w['page_patches']} patches), query <= {w['query_vectors']} tokens"),
        ("tokens / step", f"{plan['tokens_per_step']:,} decoder tokens, {plan['image_patches_per_step']:,} patches"),
        ("FLOPs / step", f"forward {f['forward']:.3g}, backward {f['backward']:.3g}, recompute {f['recompute']:.3g}, "
                         f"grad-cache forward {f['grad_cache_forward']:.3g} (total {f['total']:.3g})"),
    ]
    for key in ("params", "params_gathered", "grads", "optimizer", "optimizer_step", "activations", "page_vectors",
                "inputs", "runtime"):
        note = ""
        if key == "activations":
            note = (f"  (one chunk; with checkpointing {m['activations_with_checkpointing']:.2f}, without "
                    f"{m['activations_without_checkpointing']:.2f}; configured: "
                    f"{'with' if c['gradient_checkpointing'] else 'without'})")
        rows.append((f"GiB/GPU {key}", f"{m[key]:.2f}{note}"))
    rows.append(("GiB/GPU total", f"{m['total']:.2f} of {cl['gpu_memory_gib']:g}: "
                                  f"{'fits' if plan['fits'] else 'DOES NOT FIT'}"))
    for k, sec in plan["step_seconds"].items():
        rows.append((f"step at {k} MFU", f"{sec:.2f} s (hardware utilisation {plan['hfu_at_mfu'][k] * 100:.0f}% "
                                        "incl. recompute and grad-cache forward)"))
    rows.append(("run at 40% MFU", f"{plan['run_hours_at_40%']:.1f} h; loader must feed "
                                   f"{plan['pages_per_second_per_gpu_at_40%']:.1f} pages/s per GPU"))
    if plan["cpu_offload_gib_per_node"]:
        rows.append(("host RAM / node", f"{plan['cpu_offload_gib_per_node']:.1f} GiB for offloaded states"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
