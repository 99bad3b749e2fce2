"""Atomic writes: a reader sees the old file (or directory) or the whole new one; a failed write leaves the old one
and no temporary files; sha256_file agrees with hashlib."""

import hashlib
import os

import pytest

from pipeline.layout import files
from pipeline.layout.files import atomic_directory, atomic_write, sha256_file


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * files.BLOCK + 17)  # several blocks and a partial one
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    atomic_write(path, "old")
    atomic_write(path, b"new")
    assert path.read_text() == "new"

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "partial")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    final = tmp_path / "index"
    with atomic_directory(final) as d:
        (d / "a").write_text("1")
        (d / "b").write_text("1")
    with atomic_directory(final) as d:
        (d / "a").write_text("2")
        assert (final / "a").read_text() == "1"  # the old one stays until the new one is complete
    assert sorted(p.name for p in final.iterdir()) == ["a"] and (final / "a").read_text() == "2"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as d:
            (d / "a").write_text("3")
            raise RuntimeError("killed half way")
    assert (final / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["index"]
