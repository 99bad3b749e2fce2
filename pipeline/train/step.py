"""One optimizer step over a global batch: gradient-cached encode, cross-rank page gather, the budget objective,
replayed backward through the DeepSpeed engine, and one engine.step().

Each rank scores its B local queries against all W*B pages of the global batch (query i of rank r has page
r*B+i as its positive). The gather is autograd-aware, so a page's cached gradient sums the contributions of
every rank's queries; DeepSpeed then averages over ranks, which gives exactly the gradient of the mean loss
over the global batch - the same as one process computing the plain full-batch loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from pipeline.train import dist, gradcache


@dataclass
class StepContext:
    """The live objects a step needs (built once by pipeline.train.loop's build_* functions)."""

    engine: Any  # deepspeed engine wrapping Encoder(retriever)
    loss_fn: Callable  # (q: dict[int, MV], p: dict[int, MV], budgets, labels [B]) -> (total [], {Budget: []})
    budgets_fn: Callable[[int], list]  # step -> the budgets to train this step (same on every rank)
    chunk_size: int  # pairs per gradient-cache chunk
    grad_cache: bool = True
    gather_grad: bool = True  # False only in the negative-control test (local-only gradient flow)


@dataclass
class StepOutput:
    """What one step reports (tensors stay on device; reduce them when logging)."""

    loss: torch.Tensor  # [] this rank's total loss, detached
    per_budget: dict = field(default_factory=dict)  # Budget -> [] detached
    skipped: bool = False  # non-finite loss on some rank: no update anywhere


def pad_cat(parts: list[Any]) -> Any:
    """Concatenate MultiVectors [b_i, N_i, D] along the batch -> [sum b_i, max N_i, D]; padding is masked out."""
    n = max(p.vectors.shape[1] for p in parts)
    vectors = torch.cat([F.pad(p.vectors, (0, 0, 0, n - p.vectors.shape[1])) for p in parts])
    mask = torch.cat([F.pad(p.mask, (0, n - p.mask.shape[1]), value=False) for p in parts])
    grids = None if parts[0].grids is None else torch.cat([p.grids for p in parts])
    return dataclasses.replace(parts[0], vectors=vectors, mask=mask, grids=grids)


def cat_exits(chunks: list[dict[int, Any]]) -> dict[int, Any]:
    """Per-chunk {exit: MultiVector} -> one {exit: MultiVector} over the local batch, as detached leaves."""
    return {e: _leaf(pad_cat([c[e] for c in chunks])) for e in sorted(chunks[0])}


def _leaf(mv: Any) -> Any:
    return dataclasses.replace(mv, vectors=mv.vectors.detach().requires_grad_())


def chunk_grads(leaves: dict[int, Any], chunks: list[dict[int, Any]]) -> list[list[torch.Tensor]]:
    """Split each leaf's gradient [B, Nmax, D] back into the chunks' own shapes, in gradcache.leaves order."""
    out, start = [], 0
    for c in chunks:
        b = len(c[next(iter(c))].vectors)
        grads = []
        for e in sorted(c):
            g = leaves[e].vectors.grad
            n = c[e].vectors.shape[1]
            grads.append(torch.zeros_like(c[e].vectors) if g is None else g[start : start + b, :n])
        out.append(grads)
        start += b
    return out


def gather_pages(p: dict[int, Any], grad: bool = True) -> dict[int, Any]:
    """Every rank's pages, rank order: {exit: MV [B, N, D]} -> {exit: MV [W*B, Nmax, D]}."""
    out = {}
    for e, mv in p.items():
        mask = dist.gather_padded(mv.mask.to(torch.uint8), 2, grad=False).bool()
        grids = None if mv.grids is None else dist.gather_padded(mv.grids, 1, grad=False)
        out[e] = dataclasses.replace(mv, vectors=dist.gather_padded(mv.vectors, 2, grad=grad), mask=mask, grids=grids)
    return out


class Encoder(torch.nn.Module):
    """What DeepSpeed wraps: one `forward(kind, inputs, exits)` over the Retriever's two encoders.

    Every chunk forward must go through `engine(...)`: DeepSpeed's forward marks the micro-step, and without it
    ZeRO-3 overwrites instead of accumulating the gradients of successive backward calls.
    """

    def __init__(self, retriever: torch.nn.Module):
        super().__init__()
        self.retriever = retriever

    def forward(self, kind: str, inputs: Any, exits: list[int]) -> list[Any]:
        """[MultiVector per exit in `exits` order] (a list: ZeRO-3's hooks walk outputs and want no int keys)."""
        encode = self.retriever.encode_queries if kind == "queries" else self.retriever.encode_pages
        out = encode(inputs, exits=exits)
        return [out[e] for e in exits]


def _encoders(ctx: StepContext, exits: list[int]) -> tuple[Callable, Callable]:
    def run(kind: str) -> Callable:
        return lambda x: dict(zip(exits, ctx.engine(kind, x, exits)))

    return run("queries"), run("pages")


def _backward(ctx: StepContext) -> Callable[[torch.Tensor], Any]:
    return lambda loss: ctx.engine.backward(loss, scale_wrt_gas=False)


def train_step(ctx: StepContext, batch: Any, step: int) -> StepOutput:
    """One optimizer step on this rank's share `batch` (B pairs) of global batch `step`."""
    budgets = ctx.budgets_fn(step)
    exits = sorted({b.layers for b in budgets})
    enc_q, enc_p = _encoders(ctx, exits)
    if not ctx.grad_cache:
        return _plain_step(ctx, batch, budgets, enc_q, enc_p)
    q_chunks, q_rng = gradcache.encode_no_grad(enc_q, batch.queries, ctx.chunk_size)
    p_chunks, p_rng = gradcache.encode_no_grad(enc_p, batch.pages, ctx.chunk_size)
    q, p = cat_exits(q_chunks), cat_exits(p_chunks)
    labels = torch.arange(len(batch), device=q[exits[0]].vectors.device) + dist.rank() * len(batch)
    total, per_budget = ctx.loss_fn(q, gather_pages(p, ctx.gather_grad), budgets, labels)
    # The one host sync of the step: every rank must agree to skip, or ZeRO-3's collectives would hang.
    if dist.any_rank(~torch.isfinite(total)):
        return StepOutput(total.detach(), _detach(per_budget), skipped=True)
    total.backward()
    gradcache.replay_backward(enc_q, batch.queries, ctx.chunk_size, q_rng, chunk_grads(q, q_chunks), _backward(ctx))
    gradcache.replay_backward(enc_p, batch.pages, ctx.chunk_size, p_rng, chunk_grads(p, p_chunks), _backward(ctx))
    ctx.engine.step()
    return StepOutput(total.detach(), _detach(per_budget))


def _plain_step(ctx: StepContext, batch: Any, budgets: list, enc_q: Callable, enc_p: Callable) -> StepOutput:
    """The same step without the cache: the whole local batch in one graph (memory grows with the batch)."""
    q, p = enc_q(batch.queries), enc_p(batch.pages)
    labels = torch.arange(len(batch), device=q[min(q)].vectors.device) + dist.rank() * len(batch)
    total, per_budget = ctx.loss_fn(q, gather_pages(p, ctx.gather_grad), budgets, labels)
    if dist.any_rank(~torch.isfinite(total)):
        return StepOutput(total.detach(), _detach(per_budget), skipped=True)
    ctx.engine.backward(total, scale_wrt_gas=False)
    ctx.engine.step()
    return StepOutput(total.detach(), _detach(per_budget))


def _detach(per_budget: dict) -> dict:
    return {b: v.detach() for b, v in per_budget.items()}
