"""Nothing is computed from bytes that were not verified: corrupt eval and train shards, wrong sample counts and
undecodable samples are refused in one line naming the shard (and the sample key); skipping bad samples counts them."""

import tarfile

import pytest

from data_prep.shards import verify
from pipeline.data.stream import TrainStream, make_loader
from pipeline.data.reader import ShardPages
from pipeline.layout.shards import ShardError, build_manifest, error_line, split_shards, write_manifest
from pipeline.layout.tars import write_shard
from tests.helpers.corrupt import change_query_letters, edit_manifest, first_key, flip_image_bytes
from tests.helpers.shards import write_shards


@pytest.fixture
def train(tmp_path):
    return write_shards(tmp_path / "train", n_pages=16, shard_size=8)


@pytest.fixture
def evalset(tmp_path):
    return write_shards(tmp_path / "eval", n_pages=8, shard_size=4, split="eval")


def test_corrupt_eval_shard_is_refused_before_any_page(evalset):
    assert change_query_letters(evalset / "eval-000001.tar") == 4  # size unchanged, the tar still parses
    with pytest.raises(ShardError) as err:
        ShardPages(evalset, "eval")
    assert str(err.value) == (f"{evalset}/eval-000001.tar: sha256 differs from the manifest "
                              "(the shard was changed or corrupted)")


def test_eval_fingerprint_follows_the_verified_content(tmp_path):
    a = ShardPages(write_shards(tmp_path / "a", n_pages=8, shard_size=4, split="eval"), "eval")
    same = ShardPages(write_shards(tmp_path / "b", n_pages=8, shard_size=4, split="eval"), "eval")
    other = ShardPages(write_shards(tmp_path / "c", n_pages=8, shard_size=4, split="eval", seed=1), "eval")
    assert a.fingerprint == same.fingerprint != other.fingerprint
    pages = list(a.pages())
    assert len(pages) == 8 and all(len(p.queries) == 1 for p in pages)
    assert ShardPages(tmp_path / "a", "eval", max_pages=3).fingerprint != a.fingerprint


def test_eval_shard_changed_after_the_fingerprint_is_refused_when_read(evalset):
    pages = ShardPages(evalset, "eval")
    change_query_letters(evalset / "eval-000000.tar")
    with pytest.raises(ShardError, match=r"eval-000000.tar: sha256 differs from the manifest"):
        list(pages.pages())


def test_corrupt_train_shard_is_refused_by_default(train):
    change_query_letters(train / "train-000001.tar")
    infos = split_shards(train, "train")  # sizes match: only the bytes tell
    with pytest.raises(ShardError) as err:
        TrainStream(infos, 4, 1, 0, seed=0)
    assert str(err.value) == (f"{train}/train-000001.tar: sha256 differs from the manifest "
                              "(the shard was changed or corrupted)")
    assert len(TrainStream(infos, 4, 1, 0, seed=0, verify=False).refs) == 16  # data.verify_checksums=false


def test_undecodable_image_names_shard_and_key(train):
    shard = train / "train-000000.tar"
    key = first_key(shard)
    flip_image_bytes(shard, key, reseal=True)  # as if the renderer had written it: checksums agree
    stream = TrainStream(split_shards(train, "train"), 16, 1, 0, seed=0)
    with pytest.raises(ShardError) as err:
        stream.raw_batch(0)
    msg = str(err.value)
    assert msg.startswith(f"{shard}: sample {key}: the image does not decode (") and "\n" not in msg


def test_skip_bad_samples_replaces_and_counts(train):
    shard = train / "train-000000.tar"
    key = first_key(shard)
    flip_image_bytes(shard, key, reseal=True)
    stream = TrainStream(split_shards(train, "train"), 16, 1, 0, seed=0, skip_bad=True)
    raw = stream.raw_batch(0)  # one epoch = one batch: every sample, the bad one replaced
    assert raw.bad_samples == 1 and key not in raw.keys and len(raw.keys) == 16
    assert stream.raw_batch(0).keys == raw.keys  # the replacement is deterministic (resume stays exact)


def test_a_json_record_that_does_not_parse_is_refused_or_skipped_and_counted(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    good = write_shards(tmp_path / "g", n_pages=4, shard_size=4)
    with tarfile.open(good / "train-000000.tar") as tar:
        members = {}
        for m in tar:
            key, ext = m.name.split(".")
            members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    samples = list(members.items())
    samples[2] = (samples[2][0], {"png": samples[2][1]["png"], "json": b"{not json"})
    entry = {"name": "train-000000.tar", "split": "train", **write_shard(out / "train-000000.tar", samples)}
    write_manifest(out, build_manifest({}, "t", [entry]))
    infos = split_shards(out, "train")
    with pytest.raises(ShardError, match=rf"train-000000.tar: sample {samples[2][0]}: the json record does not parse$"):
        TrainStream(infos, 2, 1, 0, seed=0)
    stream = TrainStream(infos, 2, 1, 0, seed=0, skip_bad=True)
    assert stream.bad_at_index == 1 and len(stream.refs) == 3


def test_wrong_sample_counts_are_refused(train):
    edit_manifest(train, 0, samples=999)
    infos = split_shards(train, "train")
    with pytest.raises(ShardError) as err:
        TrainStream(infos, 4, 1, 0, seed=0, verify=False)  # counts are checked even without checksums
    assert str(err.value) == f"{train}/train-000000.tar: holds 8 samples, the manifest says 999"
    assert verify(train) == [f"{train}/train-000000.tar: holds 8 samples, the manifest says 999",
                             f"{train}/manifest.json: splits.train {{'samples': 16, 'shards': 2}} disagrees with "
                             "its shard entries"]


def test_error_from_a_loader_worker_is_still_one_line(train):
    shard = train / "train-000000.tar"
    key = first_key(shard)
    flip_image_bytes(shard, key, reseal=True)
    stream = TrainStream(split_shards(train, "train"), 16, 1, 0, seed=0)
    with pytest.raises(ShardError) as err:
        next(iter(make_loader(stream, 1)))  # re-raised by the DataLoader with the worker's traceback in the text
    assert "Traceback" in str(err.value)
    assert error_line(err.value) == f"{shard}: sample {key}: the image does not decode (not an image format PIL knows)"
