"""Gradient cache on one process: chunked no-grad pass + replay equals the plain full-batch gradient, dropout too."""

import torch
import torch.nn.functional as F

from pipeline.train import gradcache


def _encoder():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 8))


def _loss(q, p):
    """In-batch contrastive loss over [B, 8] queries and pages (positives on the diagonal)."""
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    return F.cross_entropy(q @ p.T / 0.1, torch.arange(len(q)))


def _plain_grads(model, xq, xp, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    _loss(model(xq), model(xp)).backward()
    return [p.grad.clone() for p in model.parameters()]


def _cached_grads(model, xq, xp, seed, chunk, replay_rng=True):
    model.zero_grad()
    torch.manual_seed(seed)
    q_out, q_rng = gradcache.encode_no_grad(model, xq, chunk)
    p_out, p_rng = gradcache.encode_no_grad(model, xp, chunk)
    q = torch.cat(q_out).requires_grad_()
    p = torch.cat(p_out).requires_grad_()
    _loss(q, p).backward()
    if not replay_rng:  # a broken replay: fresh random state, so dropout masks differ from the first pass
        q_rng = [gradcache.RngState.capture() for _ in q_rng]
        p_rng = [gradcache.RngState.capture() for _ in p_rng]
    gq = [[g] for g in q.grad.split(chunk)]
    gp = [[g] for g in p.grad.split(chunk)]
    gradcache.replay_backward(model, xq, chunk, q_rng, gq)
    gradcache.replay_backward(model, xp, chunk, p_rng, gp)
    return [p.grad.clone() for p in model.parameters()]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_grad_cache_equals_full_batch_gradient_with_dropout():
    model = _encoder()
    torch.manual_seed(1)
    xq, xp = torch.randn(10, 12), torch.randn(10, 12)
    # The plain pass draws dropout masks for queries then pages in one go; the cached pass draws them chunk by
    # chunk in the same order, so with the same seed the masks match exactly.
    plain = _plain_grads(model, xq, xp, seed=7)
    scale = max(float(g.abs().max()) for g in plain)
    for chunk in (3, 4, 10):
        assert _max_diff(_cached_grads(model, xq, xp, 7, chunk), plain) < 1e-5 * scale
    # Negative control: replaying without the first pass's random state gives a different gradient.
    assert _max_diff(_cached_grads(model, xq, xp, 7, 3, replay_rng=False), plain) > 1e-2 * scale


def test_leaves_order_and_rng_restored():
    tree = {2: (torch.ones(1), torch.zeros(1, dtype=torch.long)), 1: [torch.full((1,), 3.0)]}
    assert [float(t) for t in gradcache.leaves(tree)] == [3.0, 1.0]
    state = torch.get_rng_state()
    gradcache.replay_backward(lambda x: x * 2, torch.ones(4, requires_grad=True), 2,
                              [gradcache.RngState.capture()] * 2, [[torch.ones(2)], [torch.ones(2)]])
    assert torch.equal(torch.get_rng_state(), state)
    assert gradcache.chunk_slices(5, 2) == [(0, 2), (2, 4), (4, 5)]
