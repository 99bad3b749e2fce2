"""MaxSim against a brute-force double loop, with padding masks; chunked and streaming scorers agree."""

import torch

from pipeline.model.maxsim import maxsim, maxsim_chunked, topk_stream
from pipeline.model.pooling import normalize
from pipeline.model.vectors import MultiVector
from tests.helpers.reference import real_rows, ref_maxsim


def random_mv(b: int, n: int, d: int, seed: int, min_len: int = 1) -> MultiVector:
    g = torch.Generator().manual_seed(seed)
    vectors = normalize(torch.randn(b, n, d, generator=g, dtype=torch.float64))
    lengths = torch.randint(min_len, n + 1, (b,), generator=g)
    mask = torch.arange(n)[None] < lengths[:, None]
    # Garbage in the padding: large values that would win every max if they were not masked.
    vectors = torch.where(mask[..., None], vectors, torch.full_like(vectors, 5.0))
    return MultiVector(vectors, mask)


def test_maxsim_equals_double_loop_with_padding():
    q, p = random_mv(5, 7, 16, 0), random_mv(6, 11, 16, 1)
    got = maxsim(q, p)
    want = torch.tensor(ref_maxsim(real_rows(q.vectors, q.mask), real_rows(p.vectors, p.mask)), dtype=torch.float64)
    assert got.shape == (5, 6)
    torch.testing.assert_close(got.double(), want, rtol=1e-10, atol=1e-10)


def test_page_score_independent_of_batch_neighbours():
    q, p = random_mv(3, 5, 8, 2), random_mv(4, 6, 8, 3)
    alone = torch.cat([maxsim(q, p.slice(j, j + 1)) for j in range(len(p))], dim=1)
    wide = MultiVector.cat([p, random_mv(2, 20, 8, 4)])  # longer neighbours pad the first four pages
    torch.testing.assert_close(maxsim(q, wide)[:, :4], alone)


def test_empty_page_scores_zero_and_grads_finite():
    q, p = random_mv(2, 4, 8, 5), random_mv(3, 4, 8, 6)
    p.mask[1] = False
    vectors = p.vectors.clone().requires_grad_()
    s = maxsim(q, MultiVector(vectors, p.mask))
    assert torch.all(s[:, 1] == 0)
    s.sum().backward()
    assert torch.isfinite(vectors.grad).all() and torch.all(vectors.grad[1] == 0)


def test_chunked_and_stream_match_full():
    q, p = random_mv(9, 5, 8, 7), random_mv(23, 9, 8, 8)
    full = maxsim(q, p)
    torch.testing.assert_close(maxsim_chunked(q, p, page_chunk=4, query_chunk=2), full)
    chunks = [p.slice(s, s + 5) for s in range(0, len(p), 5)]
    scores, idx = topk_stream(q, chunks, k=4)
    want_s, want_i = full.topk(4, dim=1)
    torch.testing.assert_close(scores, want_s)
    assert torch.equal(idx, want_i)


def test_half_precision_accumulates_in_float32():
    q, p = random_mv(2, 30, 16, 9), random_mv(3, 8, 16, 10)
    got = maxsim(q.to("cpu", torch.bfloat16), p.to("cpu", torch.bfloat16))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), maxsim(q, p), rtol=0.02, atol=0.1)


def autograd_reference(q: MultiVector, p: MultiVector) -> torch.Tensor:
    """Plain autograd MaxSim (masked_fill + max) for checking the hand-written backward."""
    sim = torch.einsum("qnd,pmd->qnpm", q.vectors, p.vectors).masked_fill(~p.mask[None, None], float("-inf"))
    best = sim.max(dim=-1).values
    best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    return (best * q.mask[..., None]).sum(1)


def test_gradients_match_autograd_reference():
    q, p = random_mv(4, 6, 8, 11), random_mv(5, 9, 8, 12)
    p.mask[2] = False  # an empty page gets no gradient
    weights = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for fn in (maxsim, autograd_reference):
        qv, pv = q.vectors.clone().requires_grad_(), p.vectors.clone().requires_grad_()
        scores = fn(MultiVector(qv, q.mask), MultiVector(pv, p.mask))
        (scores * weights).sum().backward()
        grads.append((qv.grad, pv.grad, scores.detach()))
    torch.testing.assert_close(grads[0][2], grads[1][2])  # the training path scores like the inference path
    torch.testing.assert_close(grads[0][2], maxsim(q, p))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert torch.all(grads[0][1][2] == 0) and torch.all(grads[0][1][~p.mask] == 0)
    small_q, small_p = random_mv(2, 3, 4, 13), random_mv(3, 4, 4, 14)
    assert torch.autograd.gradcheck(
        lambda a, b: maxsim(MultiVector(a, small_q.mask), MultiVector(b, small_p.mask)),
        (small_q.vectors.clone().requires_grad_(), small_p.vectors.clone().requires_grad_()))


def test_both_backward_paths_agree(monkeypatch):
    from pipeline.model import maxsim as ms

    q, p = random_mv(3, 5, 8, 21), random_mv(4, 7, 8, 22)
    grads = []
    for limit in (0, 1000):  # 0: always gather; 1000: always dense
        monkeypatch.setattr(ms, "DENSE_BACKWARD_MAX_NP", limit)
        qv, pv = q.vectors.clone().requires_grad_(), p.vectors.clone().requires_grad_()
        (maxsim(MultiVector(qv, q.mask), MultiVector(pv, p.mask)) ** 2).sum().backward()
        grads.append((qv.grad, pv.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
