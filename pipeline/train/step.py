"""One optimizer step over a global batch: encode (gradient-cached or plain), exchange pages across ranks, the
budget objective, backward through the DeepSpeed engine, one engine.step().

Each rank scores its B local queries against all W*B pages of the global batch (query i of rank r has page
r*B+i as its positive). The page exchange is autograd-aware, so a page's gradient sums the contributions of
every rank's queries; DeepSpeed then averages over ranks, which gives exactly the gradient of the mean loss over
the global batch: the same as one process computing the plain full-batch loss (tests/train/test_step_equivalence).

Host syncs in a step: the page-size exchange (the longest page must be known to pad), the flags all-reduce (every
rank must agree to skip a non-finite step or to stop, or ZeRO-3's collectives would hang), and whatever DeepSpeed
does inside backward() and step() (the gradient norm, for one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from pipeline.model.budgets import Budget
from pipeline.model.processor import EncoderInputs
from pipeline.model.vectors import MultiVector
from pipeline.train import dist
from pipeline.train.engine import clear_stale_grads
from pipeline.train.gradcache import EncodeFn, Encoding, GradCache, PlainEncoding, Vectors

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

    from pipeline.data.batch import Batch

LossFn = Callable[[Vectors, Vectors, list[Budget], torch.Tensor, int],
                  tuple[torch.Tensor, dict[Budget, torch.Tensor]]]


@dataclass
class StepContext:
    """The live objects a step needs (built once by pipeline.train.loop's build_* functions)."""

    engine: DeepSpeedEngine  # wraps Encoder(retriever)
    loss_fn: LossFn  # (q, pages of all ranks, budgets, labels [B], step) -> (total [], {budget: ce []})
    budgets_fn: Callable[[int], list[Budget]]  # step -> the budgets trained at it (the same on every rank)
    chunk_size: int  # pairs per gradient-cache chunk
    grad_cache: bool = True
    gather_grad: bool = True  # False only in a negative-control test (local-only gradient flow)

    def encoding(self, encode: EncodeFn) -> Encoding:
        return GradCache(encode, self.chunk_size) if self.grad_cache else PlainEncoding(encode)


@dataclass
class StepOutput:
    """What one step reports (tensors stay on device; reduce them when logging)."""

    loss: torch.Tensor  # [] this rank's total loss, detached
    per_budget: dict[Budget, torch.Tensor] = field(default_factory=dict)  # budget -> [] detached
    skipped: bool = False  # non-finite loss on some rank: no update anywhere
    stop: bool = False  # some rank asked to stop (a signal): every rank checkpoints after this step


class Encoder(torch.nn.Module):
    """What DeepSpeed wraps: one forward for a chunk of queries and its pages.

    Every chunk forward goes through `engine(...)`: DeepSpeed's forward marks the micro-step, and ZeRO-3 gathers
    the parameters in its hooks. Wrapping puts the retriever in training mode: transformers loads a backbone in
    eval mode, where its layers skip activation checkpointing (model.gradient_checkpointing) and dropout.
    """

    def __init__(self, retriever: torch.nn.Module):
        super().__init__()
        self.retriever = retriever.train()

    def forward(self, queries: EncoderInputs, pages: EncoderInputs, exits: list[int]
                ) -> tuple[list[MultiVector], list[MultiVector]]:
        """Per exit in `exits` order, (query vectors, page vectors) (lists: ZeRO-3's hooks walk the outputs)."""
        q = self.retriever.encode_queries(queries, exits=exits)
        p = self.retriever.encode_pages(pages, exits=exits)
        return [q[e] for e in exits], [p[e] for e in exits]


def gather_pages(p: Vectors, grad: bool = True) -> Vectors:
    """Every rank's pages at every exit, rank order: {exit: [B, N_r, D]} -> {exit: [W*B, N_max, D]}.

    Two collectives whatever the number of exits: the sizes (N_r, each page's vector count and grid; a page's
    real vectors are a prefix, so its count rebuilds the mask) and the vectors of all exits in one gather.
    """
    if dist.world_size() == 1:
        return p
    exits = sorted(p)
    first = p[exits[0]]
    b, n, d = first.vectors.shape
    local = torch.cat([torch.tensor([n], device=first.mask.device), first.mask.sum(1), first.grids.flatten()])
    sizes = dist.all_gather_fixed(local)  # [W, 1 + 3B]
    n_max = int(sizes[:, 0].max())
    vectors = dist.gather_padded(torch.cat([p[e].vectors for e in exits], dim=-1), n_max, grad)
    counts, grids = sizes[:, 1 : 1 + b].reshape(-1), sizes[:, 1 + b :].reshape(-1, 2)
    mask = torch.arange(n_max, device=counts.device) < counts[:, None]
    return {e: MultiVector(v, mask, grids) for e, v in zip(exits, vectors.split(d, dim=-1))}


def _encode_fn(engine: DeepSpeedEngine, exits: list[int]) -> EncodeFn:
    def encode(queries: EncoderInputs, pages: EncoderInputs) -> tuple[Vectors, Vectors]:
        q, p = engine(queries, pages, exits)
        return dict(zip(exits, q)), dict(zip(exits, p))

    return encode


def train_step(ctx: StepContext, batch: Batch, step: int, stop: bool = False) -> StepOutput:
    """One optimizer step on this rank's share `batch` (B pairs) of global batch `step`. `stop`: this rank was
    asked to stop; the returned `stop` says whether any rank was (agreed in the step's one flags all-reduce)."""
    budgets = ctx.budgets_fn(step)
    encoding = ctx.encoding(_encode_fn(ctx.engine, sorted({b.layers for b in budgets})))
    clear_stale_grads(ctx.engine)
    q, p = encoding.forward(batch.queries, batch.pages)
    labels = torch.arange(len(batch), device=p[min(p)].vectors.device) + dist.rank() * len(batch)
    total, per_budget = ctx.loss_fn(q, gather_pages(p, ctx.gather_grad), budgets, labels, step)
    skipped, stop = dist.any_ranks(~torch.isfinite(total), stop)
    if not skipped:
        encoding.backward(total, lambda loss: ctx.engine.backward(loss, scale_wrt_gas=False))
        ctx.engine.step()
    return StepOutput(total.detach(), {b: v.detach() for b, v in per_budget.items()}, skipped, stop)
