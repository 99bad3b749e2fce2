"""A toy two-exit multi-vector encoder with the Retriever's call shapes and outputs (real MultiVector), for step
tests without a VLM. Dropout is optional: on, it checks that the gradient cache replays the random state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.model.vectors import MultiVector


@dataclass
class Inputs:
    """Token features [B, N, F] with the processor inputs' slice / len / to."""

    x: torch.Tensor

    def slice(self, a: int, b: int) -> "Inputs":
        return Inputs(self.x[a:b])

    def to(self, device) -> "Inputs":
        return Inputs(self.x.to(device))

    def __len__(self) -> int:
        return len(self.x)


class ToyRetriever(torch.nn.Module):
    """Two layers, a head after each (exits 1 and 2); queries and pages share the trunk."""

    exits = [1, 2]

    def __init__(self, feat: int = 6, hidden: int = 16, dim: int = 8, dropout: float = 0.0):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(feat, hidden), torch.nn.Linear(hidden, hidden)])
        self.heads = torch.nn.ModuleDict({"1": torch.nn.Linear(hidden, dim), "2": torch.nn.Linear(hidden, dim)})
        self.dropout = torch.nn.Dropout(dropout)

    def _encode(self, inputs: Inputs, exits, pages: bool) -> dict[int, MultiVector]:
        h, out = inputs.x, {}
        b, n = h.shape[:2]
        grids = torch.tensor([[1, n]] * b) if pages else None
        for i, layer in enumerate(self.layers, start=1):
            h = self.dropout(torch.tanh(layer(h)))
            if i in (exits or self.exits):
                v = F.normalize(self.heads[str(i)](h), dim=-1)
                out[i] = MultiVector(v, torch.ones(b, n, dtype=torch.bool), grids)
        return out

    def encode_queries(self, inputs: Inputs, exits=None) -> dict[int, MultiVector]:
        return self._encode(inputs, exits, pages=False)

    def encode_pages(self, inputs: Inputs, exits=None) -> dict[int, MultiVector]:
        return self._encode(inputs, exits, pages=True)


def toy_loss(q: dict, p: dict, budgets=None, labels=None):
    """Mean over exits of in-batch cross-entropy over MaxSim scores (q: [Bq, Nq, D], p: [Bp, Np, D])."""
    per = {}
    for e in sorted(q):
        s = torch.einsum("qnd,pmd->qpnm", q[e].vectors, p[e].vectors)
        s = s.masked_fill(~p[e].mask[None, :, None, :], -1e4).amax(-1)
        s = (s * q[e].mask[:, None, :]).sum(-1)
        lab = torch.arange(len(s)) if labels is None else labels
        per[e] = F.cross_entropy(s / 0.1, lab)
    return torch.stack(list(per.values())).mean(), per


def global_batch(n: int, seed: int = 0, feat: int = 6) -> tuple[Inputs, Inputs]:
    """A fixed global batch: queries [n, 3, feat], pages [n, 5, feat]."""
    g = torch.Generator().manual_seed(seed)
    return Inputs(torch.randn(n, 3, feat, generator=g)), Inputs(torch.randn(n, 5, feat, generator=g))
