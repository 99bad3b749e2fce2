"""Optimizers (AdamW, bitsandbytes AdamW8bit, SGD) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from pipeline.train.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: matrices decay, biases and norms (1-D) do not."""
    decay, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            # ZeRO-3 partitions parameters to shape [0] on the module; ds_shape keeps the real shape.
            shape = getattr(p, "ds_shape", p.shape)
            (decay if len(shape) >= 2 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.optimizer` over the model's trainable parameters."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb  # optional: only this choice needs it

        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "sgd":  # plain SGD: its update is proportional to the gradient (used by exactness tests)
        return torch.optim.SGD(groups, lr=cfg.lr)
    raise ValueError(f"train.optimizer: unknown optimizer {cfg.optimizer!r} (adamw, adamw8bit, sgd)")


class WarmupCosine:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to `floor` at `total` (picklable)."""

    def __init__(self, warmup: int, total: int, floor: float = 0.0):
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, cfg.steps))
