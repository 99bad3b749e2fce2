"""The training stream: order a pure function of (seed, epoch, world size), disjoint rank shares, exact resume."""

import json

import pytest

from pipeline.layout.shards import ShardError, split_shards
from pipeline.data.stream import TrainStream, make_loader
from tests.helpers.shards import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n_pages=40, shard_size=16, no_query_every=10)


def _keys(stream, steps):
    return [stream.raw_batch(s).keys for s in steps]


def test_rank_shares_partition_the_global_batch(shards):
    infos = split_shards(shards, "train")
    refs = TrainStream(infos, 12, 1, 0, seed=3).refs
    assert len(refs) == 36  # 4 pages without a query are left out
    one = TrainStream(infos, 12, 1, 0, seed=3, refs=refs)
    ranks = [TrainStream(infos, 12, 3, r, seed=3, refs=refs) for r in range(3)]
    for step in range(7):  # crosses two epoch boundaries (3 batches per epoch)
        glob = one.raw_batch(step).keys
        parts = [r.raw_batch(step).keys for r in ranks]
        assert sum(parts, []) == glob  # the global batch does not depend on the world size
        assert len(set(glob)) == 12
    epoch0 = sum(_keys(one, range(3)), [])
    assert len(set(epoch0)) == 36  # one epoch visits every trainable page once
    assert epoch0 != sum(_keys(one, range(3, 6)), [])  # and the next epoch is a new permutation


def test_order_is_a_pure_function_of_the_seed(shards):
    infos = split_shards(shards, "train")
    a, b = TrainStream(infos, 8, 2, 1, seed=5), TrainStream(infos, 8, 2, 1, seed=5)
    assert _keys(a, range(6)) == _keys(b, range(6))
    assert _keys(a, range(6)) != _keys(TrainStream(infos, 8, 2, 1, seed=6), range(6))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_yields_exactly_the_remaining_batches(shards, workers):
    infos = split_shards(shards, "train")
    full = TrainStream(infos, 8, 2, 0, seed=1)
    expected = _keys(full, range(9))
    first = TrainStream(infos, 8, 2, 0, seed=1)
    it = iter(make_loader(first, workers))
    seen = [next(it).keys for _ in range(4)]
    first.start_step = 4  # what the loop records after consuming 4 batches
    state = json.loads(json.dumps(first.state_dict()))
    resumed = TrainStream(infos, 8, 2, 0, seed=1)
    resumed.load_state_dict(state)
    rest = []
    for raw in make_loader(resumed, workers):
        rest.append((raw.step, raw.keys))
        if len(rest) == 5:
            break
    assert seen + [k for _, k in rest] == expected
    assert [s for s, _ in rest] == list(range(4, 9))
    with pytest.raises(ValueError, match="seed"):
        TrainStream(infos, 8, 2, 0, seed=2).load_state_dict(state)


def test_manifest_mismatch_is_refused(tmp_path):
    out = write_shards(tmp_path / "s", n_pages=8, shard_size=8)
    size = (out / "train-000000.tar").stat().st_size
    with open(out / "train-000000.tar", "ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(ShardError, match=rf"train-000000.tar: {size + 512} bytes, the manifest says {size}$"):
        split_shards(out, "train")
