"""Shard names in manifest.json are data, never paths or URLs: each hostile name is refused in one line naming the
entry, before any file is opened."""

import json
import os

import pytest

from pipeline.layout.shards import ManifestError, read_manifest, split_shards
from tests.helpers.corrupt import edit_manifest
from tests.helpers.shards import write_shards


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path / "shards", n_pages=8, shard_size=4)


def test_traversal_is_refused(shards, tmp_path):
    outside = write_shards(tmp_path / "outside", n_pages=4, shard_size=4)  # a real shard outside: never read
    edit_manifest(shards, 1, name="../outside/train-000000.tar")
    with pytest.raises(ManifestError) as err:
        split_shards(shards, "train")
    assert str(err.value) == (f"{shards}/manifest.json shards[1] ('../outside/train-000000.tar'): shard name "
                              "'../outside/train-000000.tar' is a path; only plain shard names are read")
    assert (outside / "train-000000.tar").is_file()


def test_absolute_path_is_refused(shards, tmp_path):
    other = write_shards(tmp_path / "other", n_pages=4, shard_size=4)
    edit_manifest(shards, 0, name=str(other / "train-000000.tar"))
    with pytest.raises(ManifestError, match=r"shards\[0\] .*: shard name '/.*' is an absolute path; only plain"):
        split_shards(shards, "train")


def test_url_scheme_is_refused_and_nothing_runs(shards, tmp_path):
    marker = tmp_path / "MARKER"
    edit_manifest(shards, 0, name=f"pipe:touch {marker}")
    with pytest.raises(ManifestError, match=r"shard name 'pipe:touch .*MARKER' has a URL scheme"):
        split_shards(shards, "train")
    assert not marker.exists()


@pytest.mark.parametrize("name, why", [
    ("train-0.tar", "does not match {split}-NNNNNN.tar"),
    ("train-000000.tar.gz", "does not match {split}-NNNNNN.tar"),
    ("eval-000000.tar", "is not of the entry's split 'train'"),
    ("..", "is a path"),
    ("sub\\train-000000.tar", "is a path"),
])
def test_names_that_are_not_plain_shard_names(shards, name, why):
    edit_manifest(shards, 0, name=name)
    with pytest.raises(ManifestError) as err:
        read_manifest(shards)
    assert str(err.value).startswith(f"{shards}/manifest.json shards[0] ({name!r}): shard name {name!r} {why}")


def test_symlink_out_of_the_directory_is_refused(shards, tmp_path):
    other = write_shards(tmp_path / "other", n_pages=4, shard_size=4)
    (shards / "train-000001.tar").unlink()
    os.symlink(other / "train-000000.tar", shards / "train-000001.tar")
    with pytest.raises(ManifestError, match=r"shards\[1\] .*: shard train-000001.tar is a symlink"):
        split_shards(shards, "train")


def test_a_name_listed_twice_is_refused(shards):
    first = json.loads((shards / "manifest.json").read_text())["shards"][0]
    edit_manifest(shards, 1, **first)
    with pytest.raises(ManifestError, match=r"shards\[1\] \('train-000000.tar'\): listed twice"):
        split_shards(shards, "train")


@pytest.mark.parametrize("field, value, why", [
    ("samples", "4", "samples must be a non-negative integer, not '4'"),
    ("bytes", -1, "bytes must be a non-negative integer, not -1"),
    ("sha256", "abc", "sha256 must be 64 lowercase hex digits"),
])
def test_entry_fields_are_checked(shards, field, value, why):
    edit_manifest(shards, 0, **{field: value})
    with pytest.raises(ManifestError) as err:
        read_manifest(shards)
    assert str(err.value) == f"{shards}/manifest.json shards[0] ('train-000000.tar'): {why}"
