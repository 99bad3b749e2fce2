"""Late-interaction (MaxSim) scoring: a batched, masked scorer and chunked scorers for corpora of any size."""

from __future__ import annotations

from typing import Iterable

import torch

from pipeline.model.precision import StoredPages
from pipeline.model.vectors import MultiVector


PAD_SCORE = 1e4  # |dot products| of unit vectors are <= 1; padding scores -PAD_SCORE (fits float16 too)


class _MaxSim(torch.autograd.Function):
    """Per (query vector, page) the best masked dot product, remembering only which page vector won.

    Forward: one GEMM [Bq*Nq, D+1] x [D+1, Bp*Np] with the page mask riding as an extra coordinate (query 1,
    page 0 or -PAD_SCORE), so the similarity comes out already masked with no second pass over it, then a max
    with its argmax. Saves only the winners' indices (not the similarity); backward works from the winners
    (no eq/div passes over the similarity as autograd's amax would): two GEMMs on a rebuilt sparse gradient for
    short pages, gathers / scatter-adds of the winning vectors for long ones.
    """

    @staticmethod
    def forward(ctx, qv: torch.Tensor, pv: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
        bq, nq, d = qv.shape
        bp, np_, _ = pv.shape
        m = pmask.unsqueeze(-1)
        qa = torch.cat([qv, qv.new_ones(bq, nq, 1)], dim=-1).reshape(bq * nq, d + 1)
        pa = torch.cat([pv * m, (m.to(pv.dtype) - 1) * PAD_SCORE], dim=-1).reshape(bp * np_, d + 1)
        sim = (qa @ pa.T).view(bq, nq, bp, np_)
        best, idx = sim.max(dim=-1)  # [Bq, Nq, Bp]
        valid = best > -PAD_SCORE / 2  # False only for pages without a real vector
        ctx.save_for_backward(qv, pv, idx, valid)
        return torch.where(valid, best, torch.zeros_like(best))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        qv, pv, idx, valid = ctx.saved_tensors
        grad = torch.where(valid, grad, torch.zeros_like(grad)).to(qv.dtype)
        need_q, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if pv.shape[1] <= DENSE_BACKWARD_MAX_NP:
            return (*_backward_dense(qv, pv, idx, grad, need_q, need_p), None)
        return (*_backward_gather(qv, pv, idx, grad, need_q, need_p), None)


DENSE_BACKWARD_MAX_NP = 32  # short pages (pooled): two small GEMMs beat gathers; long pages: gathers do less work


def _backward_dense(qv, pv, idx, grad, need_q: bool, need_p: bool):
    """Rebuild d score / d sim (non-zero only at each row's winners) and run two GEMMs. grad [Bq, Nq, Bp]."""
    bq, nq, bp = idx.shape
    np_, d = pv.shape[1], pv.shape[2]
    cols = (idx + torch.arange(bp, device=idx.device) * np_).reshape(bq * nq, bp)
    dsim = qv.new_zeros(bq * nq, bp * np_).scatter_(1, cols, grad.reshape(bq * nq, bp))
    dq = (dsim @ pv.reshape(bp * np_, d)).view(bq, nq, d) if need_q else None
    dp = (dsim.T @ qv.reshape(bq * nq, d)).view(bp, np_, d) if need_p else None
    return dq, dp


def _backward_gather(qv, pv, idx, grad, need_q: bool, need_p: bool):
    """Gather the winning page vectors / scatter-add into them: work O(Bq*Nq*Bp*D), independent of Np."""
    bq, nq, bp = idx.shape
    np_, d = pv.shape[1], pv.shape[2]
    flat = (idx + torch.arange(bp, device=idx.device) * np_).reshape(-1)  # winners as rows of pv [Bp*Np, D]
    dq = dp = None
    if need_q:
        winners = pv.reshape(bp * np_, d).index_select(0, flat).view(bq, nq, bp, d)
        dq = torch.einsum("qnp,qnpd->qnd", grad, winners)
    if need_p:
        src = (grad.unsqueeze(-1) * qv.unsqueeze(2)).reshape(-1, d)  # [Bq*Nq*Bp, D]
        dp = pv.new_zeros(bp * np_, d).index_add_(0, flat, src).view(bp, np_, d)
    return dq, dp


def _best_no_grad(qv: torch.Tensor, pv: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
    """Inference path: a plain GEMM. [Bq, Nq, D], [Bp, Np, D], [Bp, Np] -> [Bq, Nq, Bp]."""
    bq, nq, d = qv.shape
    bp, np_, _ = pv.shape
    return _masked_best((qv.reshape(bq * nq, d) @ pv.reshape(bp * np_, d).T).view(bq, nq, bp, np_), pmask)


def _masked_best(sim: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
    """sim [Bq, Nq, Bp, Np] -> the best real page vector's score [Bq, Nq, Bp] (0 for a page with none); masks in
    place only when some page has padding (one host read of the mask, fine outside the training step)."""
    if not bool(pmask.all()):
        sim.masked_fill_(~pmask.view(1, 1, *pmask.shape), -PAD_SCORE)
    best = sim.amax(dim=-1)
    return torch.where(best > -PAD_SCORE / 2, best, torch.zeros_like(best))


def maxsim(q: MultiVector, p: MultiVector | StoredPages) -> torch.Tensor:
    """Score every query against every page: sum over real query vectors of the best dot product with a real
    page vector. Padding never contributes, so a page's score does not depend on its batch neighbours; a page
    with no real vector contributes 0 per query vector. Differentiable in both vector sets (no host sync then).
    Pages stored at a precision (StoredPages) are scored from their codes, without gradient; the scores equal
    MaxSim over the dequantised vectors up to float rounding.

    q.vectors [Bq, Nq, D], p.vectors [Bp, Np, D] -> scores [Bq, Bp] (float32 for half inputs).
    """
    if isinstance(p, StoredPages):  # scored from the codes; sums at float32 like half pages
        bq, nq, d = q.vectors.shape
        best = _masked_best(p.codes.dot(q.vectors.reshape(bq * nq, d)).view(bq, nq, *p.mask.shape), p.mask)
        return torch.einsum("qnp,qn->qp", best, q.mask.to(best.device, best.dtype))
    pmask = p.mask.to(p.vectors.device)
    if torch.is_grad_enabled() and (q.vectors.requires_grad or p.vectors.requires_grad):
        best = _MaxSim.apply(q.vectors, p.vectors, pmask)  # [Bq, Nq, Bp]
    else:
        best = _best_no_grad(q.vectors, p.vectors, pmask)
    if best.dtype in (torch.float16, torch.bfloat16):
        best = best.float()  # sum many vectors' maxima at float32
    return torch.einsum("qnp,qn->qp", best, q.mask.to(best.device, best.dtype))


def maxsim_chunked(
    q: MultiVector, p: MultiVector | StoredPages, page_chunk: int = 512, query_chunk: int = 256
) -> torch.Tensor:
    """maxsim() in blocks so the [Bq, Nq, Bp, Np] similarity never exists whole; pages may live on another device
    (e.g. a CPU-resident index) and move to the queries' device one chunk at a time; stored pages are widened
    to float one chunk at a time, never the whole index.

    q [Bq, Nq, D], p [Bp, Np, D] -> scores [Bq, Bp] on q's device (float32 for half inputs).
    """
    device = q.vectors.device
    rows = []
    for qs in range(0, len(q), query_chunk):
        qc = q.slice(qs, qs + query_chunk)
        cols = [maxsim(qc, p.slice(ps, ps + page_chunk).to(device)) for ps in range(0, len(p), page_chunk)]
        rows.append(torch.cat(cols, dim=1) if cols else qc.vectors.new_zeros(len(qc), 0))
    return torch.cat(rows, dim=0) if rows else q.vectors.new_zeros(0, len(p))


@torch.no_grad()
def topk_stream(q: MultiVector, page_chunks: Iterable[MultiVector], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k pages per query over a stream of page chunks (a corpus that does not fit in memory).

    q [Bq, Nq, D]; each chunk [b_j, Np_j, D] -> (scores [Bq, k'], indices [Bq, k'] into the concatenated stream),
    k' = min(k, pages seen), best first.
    """
    device = q.vectors.device
    best_s = torch.empty(len(q), 0, device=device, dtype=torch.promote_types(q.vectors.dtype, torch.float32))
    best_i = torch.empty(len(q), 0, dtype=torch.long, device=device)
    offset = 0
    for chunk in page_chunks:
        s = maxsim_chunked(q, chunk)
        idx = torch.arange(offset, offset + len(chunk), device=device).expand(len(q), -1)
        best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.cat([best_i, idx], 1).gather(1, order)
        offset += len(chunk)
    return best_s, best_i
