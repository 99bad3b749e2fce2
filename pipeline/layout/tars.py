"""The shard file format: a deterministic USTAR writer and a one-pass parser that hashes every byte it reads.

A shard is an uncompressed USTAR tar; a sample is the run of adjacent members `{key}.{ext}` sharing one key
(pipeline/layout/shards.py holds the names, the manifest and the checks against it). Written with fixed member
order and metadata, so the same samples give the same bytes, to a temporary name renamed when complete.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pipeline.layout.files import BLOCK, atomic_file

META_EXT = "json"


class ShardError(ValueError):
    """A shard or sample whose bytes are not what the manifest promises; one line naming the shard (and key)."""


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, 0, 0o644, 0, 0, "", ""
    return ti


class _Bytes:
    """A minimal file object over bytes for tarfile.addfile (avoids copying into BytesIO)."""

    def __init__(self, data: bytes):
        self._view, self._pos = memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else self._pos + n
        chunk = self._view[self._pos : end].tobytes()
        self._pos += len(chunk)
        return chunk


def write_shard(path: str | Path, samples: list[tuple[str, dict[str, bytes]]]) -> dict:
    """Write samples [(key, {ext: bytes})] as a deterministic tar at a temporary name, fsync, rename over `path`.

    Returns the entry fields {"samples", "bytes", "sha256"} of the finished file."""
    path = Path(path)
    h = hashlib.sha256()
    with atomic_file(path) as raw:
        sink = _HashingWriter(raw, h)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                if "." in key or "/" in key or not key:
                    raise ShardError(f"{path.name}: sample key {key!r} must be non-empty without '.' or '/'")
                for ext in sorted(members):
                    tar.addfile(_tarinfo(f"{key}.{ext}", len(members[ext])), fileobj=_Bytes(members[ext]))
    return {"samples": len(samples), "bytes": path.stat().st_size, "sha256": h.hexdigest()}


class _HashingWriter:
    def __init__(self, f: BinaryIO, h):
        self.f, self.h = f, h

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()


@dataclass
class SampleMembers:
    """The members of one sample: ext -> (offset of the data in the tar, size); `small` holds the bytes of the
    members asked for while walking (e.g. the JSON record)."""

    key: str
    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    small: dict[str, bytes] = field(default_factory=dict)


class _HashingReader:
    """Reads a file sequentially, hashing every byte that passes (tarfile's stream mode never seeks)."""

    def __init__(self, f: BinaryIO):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        self.n += len(data)
        return data

    def drain(self) -> None:
        for block in iter(lambda: self.read(BLOCK), b""):
            pass


def walk_tar(source: str | Path | BinaryIO, keep: tuple[str, ...] = (META_EXT,), name: str | None = None,
             hashed: bool = True) -> tuple[list[SampleMembers], str, int]:
    """Walk a shard once, front to back: (samples in order, sha256 of every byte, byte count).

    Members named in `keep` have their bytes kept; the others are only located. Without `hashed` the walk seeks
    over member data (reads headers and kept members only) and the sha256 returned is "". ShardError (naming the
    shard) on a tar that does not parse or members that break the sample layout."""
    label = name or str(source)
    f = open(source, "rb") if isinstance(source, (str, Path)) else source
    try:
        reader = _HashingReader(f)
        samples: list[SampleMembers] = []
        by_key: dict[str, SampleMembers] = {}
        try:
            opened = tarfile.open(fileobj=reader, mode="r|") if hashed else tarfile.open(fileobj=f, mode="r:")
            with opened as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, dot, ext = m.name.partition(".")
                    if not dot or not key or "/" in m.name:
                        raise ShardError(f"{label}: member {m.name!r} is not {{key}}.{{ext}}")
                    s = by_key.get(key)
                    if s is None:
                        s = by_key[key] = SampleMembers(key)
                        samples.append(s)
                    elif samples[-1] is not s:
                        raise ShardError(f"{label}: sample {key}: members are not adjacent")
                    ext = ext.lower()
                    s.members[ext] = (m.offset_data, m.size)
                    if ext in keep:
                        s.small[ext] = tar.extractfile(m).read()
        except tarfile.TarError as e:
            raise ShardError(f"{label}: not a readable tar ({e})") from None
        if not hashed:
            return samples, "", f.seek(0, os.SEEK_END)
        reader.drain()
        return samples, reader.h.hexdigest(), reader.n
    finally:
        if f is not source:
            f.close()
