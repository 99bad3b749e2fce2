"""Atomic writes: a reader sees the old file (or directory) or the whole new one; a failed write leaves the old one
and no temporary files; sha256_file agrees with hashlib."""

import hashlib
import os

import pytest
import torch

from pipeline.layout import files
from pipeline.layout.files import atomic_directory, atomic_write, sha256_file
from pipeline.model.precision import quantize
from pipeline.serve.index import Index


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


def test_serve_index_is_written_whole(tmp_path, monkeypatch):
    old = Index(quantize(torch.ones(3, 4), "int8"), torch.tensor([0, 1, 3]), ["a", "b"], {"version": 1})
    old.save(tmp_path / "index")
    new = Index(quantize(torch.zeros(2, 4), "int8"), torch.tensor([0, 2]), ["c"], {"version": 2})

    def crash(*args, **kwargs):  # dies after the tensors, before the keys
        raise KeyboardInterrupt

    monkeypatch.setattr("pathlib.Path.write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "index")
    monkeypatch.undo()
    back = Index.load(tmp_path / "index")
    assert back.keys == ["a", "b"] and back.info["version"] == 1 and torch.equal(back.codes.data, old.codes.data)
    new.save(tmp_path / "index")
    assert Index.load(tmp_path / "index").keys == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_serve_index_never_replaces_a_directory_holding_other_files(tmp_path):
    index = Index(quantize(torch.ones(1, 4), "bin"), torch.tensor([0, 1]), ["a"], {})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"^{tmp_path}: not an index directory \(holds other files\)"):
        index.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_serve_index_refuses_tensors_that_contradict_its_header(tmp_path):
    """A tampered index (offsets past the codes, codes of another precision) is a one-line ValueError, never a
    search over misread bytes."""
    import json

    Index(quantize(torch.ones(3, 16), "bin"), torch.tensor([0, 1, 3]), ["a", "b"], {}).save(tmp_path / "i")
    assert Index.load(tmp_path / "i").codes.precision == "bin"
    header = json.loads((tmp_path / "i" / "index.json").read_text())
    (tmp_path / "i" / "index.json").write_text(json.dumps({**header, "precision": "int8"}))
    with pytest.raises(ValueError, match=r"stored codes torch.uint8 \[..., 2\] are not int8 at dim 16"):
        Index.load(tmp_path / "i")
    Index(quantize(torch.ones(3, 16), "bin"), torch.tensor([0, 1, 4]), ["a", "b"], {}).save(tmp_path / "j")
    with pytest.raises(ValueError, match=r"offsets do not cover 2 pages and 3 vectors"):
        Index.load(tmp_path / "j")
