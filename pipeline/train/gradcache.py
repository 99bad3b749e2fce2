"""How a step encodes its local batch: with the gradient cache (Gao et al., 2021) or plainly, behind one interface.

`GradCache` encodes the batch chunk by chunk without a graph and hands the loss detached leaf vectors; after the
loss's backward has filled their `.grad`, it re-encodes each chunk with the graph from the random state its first
pass started from (so dropout matches) and back-propagates that chunk's rows of the cached gradients. The result
is the plain full-batch gradient; activation memory grows with the chunk, not the batch. `PlainEncoding` is the
same contract in one graph (memory grows with the batch), the reference the cache must equal.

The encode callable takes a chunk of queries and the matching chunk of pages and returns their vectors at every
exit, so each replay runs one forward and one backward for both (half the backward calls of replaying them apart;
ZeRO-3 reduce-scatters the gradients after each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from pipeline.model.processor import EncoderInputs
from pipeline.model.vectors import MultiVector

Vectors = dict[int, MultiVector]  # exit -> MultiVector [B, N, D]
EncodeFn = Callable[[EncoderInputs, EncoderInputs], tuple[Vectors, Vectors]]  # (queries, pages) -> (q, p)
BackwardFn = Callable[[torch.Tensor], None]  # runs a scalar's backward (e.g. a DeepSpeed engine's)


def chunk_slices(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """[(start, stop)] covering range(n) in chunks of `chunk_size` (the last may be shorter)."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


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


class Encoding(Protocol):
    """forward: the local batch's vectors for the loss; backward: the loss's gradient into the parameters."""

    def forward(self, queries: EncoderInputs, pages: EncoderInputs) -> tuple[Vectors, Vectors]: ...

    def backward(self, loss: torch.Tensor, backward: BackwardFn) -> None: ...


class PlainEncoding:
    """The whole local batch in one graph; backward is the loss's own."""

    def __init__(self, encode: EncodeFn):
        self.encode = encode

    def forward(self, queries: EncoderInputs, pages: EncoderInputs) -> tuple[Vectors, Vectors]:
        return self.encode(queries, pages)

    def backward(self, loss: torch.Tensor, backward: BackwardFn) -> None:
        backward(loss)


def _pad_cat(parts: list[MultiVector]) -> MultiVector:
    """Chunks [b_i, N_i, D] -> [sum b_i, max N_i, D] as a detached leaf that will receive the loss's gradient."""
    n = max(p.vectors.shape[1] for p in parts)
    vectors = torch.cat([F.pad(p.vectors, (0, 0, 0, n - p.vectors.shape[1])) for p in parts])
    mask = torch.cat([F.pad(p.mask, (0, n - p.mask.shape[1]), value=False) for p in parts])
    grids = None if parts[0].grids is None else torch.cat([p.grids for p in parts])
    return MultiVector(vectors.detach().requires_grad_(), mask, grids)


def _dot(out: Vectors, leaves: Vectors, start: int, stop: int) -> torch.Tensor:
    """sum over exits of <out vectors, their rows of the cached gradient>: its gradient is the cached one."""
    terms = []
    for e, mv in out.items():
        grad = leaves[e].vectors.grad
        n = mv.vectors.shape[1]  # a chunk is padded to its own longest item: the leaf's rows are wider or equal
        terms.append((mv.vectors * grad[start:stop, :n]).sum() if grad is not None else mv.vectors.sum() * 0.0)
    return torch.stack(terms).sum()


class GradCache:
    """Chunked two-pass encoding of one local batch (one instance per step).

    forward(): per chunk, capture the random state and encode without a graph; returns detached leaves
    {exit: MultiVector [B, Nmax, D]} for queries and pages. backward(loss): loss.backward() fills the leaves'
    gradients (through the cross-rank gather, so they hold every rank's queries' contributions); then per chunk,
    replay from its random state with the graph and call `backward` once on the dot product of the replayed
    vectors with the chunk's rows of those gradients. Every rank runs the same number of forwards and backwards
    (ZeRO-3's parameter gathers are collective), given equal local batch sizes.
    """

    def __init__(self, encode: EncodeFn, chunk_size: int):
        self.encode = encode
        self.chunk_size = chunk_size
        self._inputs: tuple[EncoderInputs, EncoderInputs] | None = None
        self._states: list[RngState] = []
        self.queries: Vectors = {}
        self.pages: Vectors = {}

    def forward(self, queries: EncoderInputs, pages: EncoderInputs) -> tuple[Vectors, Vectors]:
        self._inputs, self._states = (queries, pages), []
        q_parts, p_parts = [], []
        for start, stop in chunk_slices(len(queries), self.chunk_size):
            self._states.append(RngState.capture())
            with torch.no_grad():
                q, p = self.encode(queries.slice(start, stop), pages.slice(start, stop))
            q_parts.append(q)
            p_parts.append(p)
        self.queries = {e: _pad_cat([c[e] for c in q_parts]) for e in q_parts[0]}
        self.pages = {e: _pad_cat([c[e] for c in p_parts]) for e in p_parts[0]}
        return self.queries, self.pages

    def replay(self, chunk: int, backward: BackwardFn) -> None:
        """Chunk `chunk` again, with the graph, from its first pass's random state; back-propagate its gradients."""
        queries, pages = self._inputs
        start, stop = chunk_slices(len(queries), self.chunk_size)[chunk]
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            self._states[chunk].restore()
            q, p = self.encode(queries.slice(start, stop), pages.slice(start, stop))
        backward(_dot(q, self.queries, start, stop) + _dot(p, self.pages, start, stop))

    def backward(self, loss: torch.Tensor, backward: BackwardFn) -> None:
        loss.backward()
        for chunk in range(len(self._states)):
            self.replay(chunk, backward)
