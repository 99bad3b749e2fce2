"""Late-interaction (MaxSim) scoring: a batched, masked scorer and chunked scorers for corpora of any size."""

from __future__ import annotations

from typing import Iterable

import torch

from pipeline.model.vectors import MultiVector


PAD_SCORE = 1e4  # |dot products| of unit vectors are <= 1; padding scores -PAD_SCORE (fits float16 too)


def maxsim(q: MultiVector, p: MultiVector) -> torch.Tensor:
    """Score every query against every page: sum over real query vectors of the best dot product with a real
    page vector. Padding never contributes, so a page's score does not depend on its batch neighbours; a page
    with no real vector contributes 0 per query vector.

    q.vectors [Bq, Nq, D], p.vectors [Bp, Np, D] -> scores [Bq, Bp] (float32 for half inputs).
    """
    bq, nq, d = q.vectors.shape
    bp, np_, _ = p.vectors.shape
    # The page mask rides in the GEMM as one extra coordinate (query 1, page 0 or -PAD_SCORE), so the
    # [Bq*Nq, Bp*Np] similarity comes out already masked: no second pass over the largest tensor.
    pmask = p.mask.to(p.vectors.device).unsqueeze(-1)
    qa = torch.cat([q.vectors, q.vectors.new_ones(bq, nq, 1)], dim=-1).reshape(bq * nq, d + 1)
    pa = torch.cat([p.vectors * pmask, (pmask.to(p.vectors.dtype) - 1) * PAD_SCORE], dim=-1).reshape(bp * np_, d + 1)
    best = (qa @ pa.T).view(bq, nq, bp, np_).amax(dim=-1)  # [Bq, Nq, Bp]
    best = torch.where(best > -PAD_SCORE / 2, best, torch.zeros_like(best))
    if best.dtype in (torch.float16, torch.bfloat16):
        best = best.float()  # sum many vectors' maxima at float32
    return torch.einsum("qnp,qn->qp", best, q.mask.to(best.device, best.dtype))


def maxsim_chunked(
    q: MultiVector, p: MultiVector, page_chunk: int = 512, query_chunk: int = 256
) -> torch.Tensor:
    """maxsim() in blocks so the [Bq, Nq, Bp, Np] similarity never exists whole; pages may live on another device
    (e.g. a CPU-resident index) and move to the queries' device one chunk at a time.

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
