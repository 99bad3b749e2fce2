"""Per-exit projection heads (hidden -> dim) and their safetensors file."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEADS_FILE = "heads.safetensors"


class ExitHeads(nn.Module):
    """One Linear(hidden, dim) per exit, keyed by the exit's decoder layer count."""

    def __init__(self, exits: list[int], hidden: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.proj = nn.ModuleDict({str(e): nn.Linear(hidden, dim, dtype=dtype) for e in exits})
        g = torch.Generator().manual_seed(seed)  # the same heads on every rank and every load
        with torch.no_grad():
            for lin in self.proj.values():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * hidden**-0.5)
                lin.bias.zero_()

    @property
    def exits(self) -> list[int]:
        return sorted(int(k) for k in self.proj)

    def forward(self, exit_: int, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [..., dim] (not normalised)."""
        return self.proj[str(exit_)](hidden)

    def save(self, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Write heads.safetensors from the live weights, or from `state` (this module's state_dict keys
        `proj.<exit>.weight|bias`, e.g. consolidated from ZeRO-3 partitions)."""
        if state is None:
            state = {f"proj.{k}.{n}": p for k, lin in self.proj.items() for n, p in lin.named_parameters()}
        tensors = {k[len("proj."):]: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(Path(directory) / HEADS_FILE))

    def load(self, directory: str | Path) -> None:
        """Strict load from heads.safetensors (no pickle)."""
        tensors = load_file(str(Path(directory) / HEADS_FILE))
        own = {f"{k}.{n}": p for k, lin in self.proj.items() for n, p in lin.named_parameters()}
        if set(tensors) != set(own):
            raise ValueError(f"{HEADS_FILE}: keys {sorted(tensors)} do not match the heads {sorted(own)}")
        with torch.no_grad():
            for name, p in own.items():
                if tensors[name].shape != p.shape:
                    raise ValueError(f"{HEADS_FILE}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(p.shape)}")
                p.copy_(tensors[name])

    def sliced(self, exits: list[int], dim: int) -> "ExitHeads":
        """A new ExitHeads with only `exits`, each keeping its first `dim` outputs."""
        src = self.proj[str(exits[0])]
        out = ExitHeads(exits, src.in_features, dim, dtype=src.weight.dtype)
        with torch.no_grad():
            for e in exits:
                out.proj[str(e)].weight.copy_(self.proj[str(e)].weight[:dim])
                out.proj[str(e)].bias.copy_(self.proj[str(e)].bias[:dim])
        return out.to(src.weight.device)
