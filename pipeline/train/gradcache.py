"""Gradient cache (Gao et al., 2021) against any encoder callable: a no-grad chunked pass that keeps the outputs
and each chunk's random state, then a per-chunk replay with the graph that back-propagates cached gradients.

The two passes give the plain full-batch gradient when the replay sees the same random state (dropout) as the
first pass; memory then grows with the chunk, not the batch. Outputs may be any nest of dicts, lists, tuples and
dataclasses; their floating-point tensors are the ones that carry gradients ("leaves", in a fixed order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch


def leaves(tree: Any) -> list[torch.Tensor]:
    """The floating-point tensors of `tree` in a fixed order (dict keys sorted, dataclass fields in order)."""
    if isinstance(tree, torch.Tensor):
        return [tree] if tree.is_floating_point() else []
    if isinstance(tree, dict):
        return [t for k in sorted(tree) for t in leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in leaves(v)]
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return [t for f in dataclasses.fields(tree) for t in leaves(getattr(tree, f.name))]
    return []


def chunk_slices(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """[(start, stop)] covering range(n) in chunks of `chunk_size` (the last may be shorter)."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _slice(inputs: Any, start: int, stop: int) -> Any:
    return inputs.slice(start, stop) if hasattr(inputs, "slice") else inputs[start:stop]


@dataclass
class RngState:
    """The random state a chunk's first pass started from (CPU and, when present, the current CUDA device)."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls) -> "RngState":
        cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


def encode_no_grad(encode: Callable[[Any], Any], inputs: Any, chunk_size: int) -> tuple[list[Any], list[RngState]]:
    """First pass: `encode` each chunk of `inputs` without a graph; returns (per-chunk outputs, per-chunk RNG)."""
    outputs, states = [], []
    for start, stop in chunk_slices(len(inputs), chunk_size):
        states.append(RngState.capture())
        with torch.no_grad():
            outputs.append(encode(_slice(inputs, start, stop)))
    return outputs, states


def replay_backward(
    encode: Callable[[Any], Any],
    inputs: Any,
    chunk_size: int,
    states: list[RngState],
    grads: list[list[torch.Tensor | None]],
    backward: Callable[[torch.Tensor], Any] = torch.Tensor.backward,
) -> None:
    """Second pass: re-encode chunk i with the graph from `states[i]` and back-propagate `grads[i]`.

    `grads[i]` holds d loss / d leaf for each of chunk i's output leaves (same shapes, None: no gradient).
    The surrogate `sum(leaf * grad)` has exactly those gradients; `backward` runs it (e.g. a DeepSpeed engine's).
    The random state after the call is the one before it.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    for (start, stop), state, chunk_grads in zip(chunk_slices(len(inputs), chunk_size), states, grads):
        with torch.random.fork_rng(devices=devices):
            state.restore()
            out = leaves(encode(_slice(inputs, start, stop)))
        if len(out) != len(chunk_grads):
            raise ValueError(f"replay gave {len(out)} leaves, the cache {len(chunk_grads)}")
        terms = [(o * g).sum() for o, g in zip(out, chunk_grads) if g is not None]
        backward(torch.stack(terms).sum() if terms else out[0].sum() * 0.0)
