"""Read and check a shard directory's manifest.json before training reads a byte of it."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ManifestError(RuntimeError):
    """A shard directory that does not match its manifest (names the shard and the problem)."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard listed in the manifest."""

    path: Path
    samples: int
    bytes: int
    sha256: str


def load_manifest(shard_dir: str | Path) -> dict:
    """Return the parsed manifest.json of `shard_dir` (version 1, see docs/interfaces.md)."""
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (run the render job first)")
    manifest = json.loads(path.read_text())
    if manifest.get("version") != 1:
        raise ManifestError(f"{path}: unsupported manifest version {manifest.get('version')!r}")
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_shards(shard_dir: str | Path, split: str, checksums: bool = False) -> list[ShardInfo]:
    """The shards of `split`, in manifest order, after checking each exists with its listed size.

    With `checksums`, each shard's sha256 is compared too (reads every byte once).
    """
    shard_dir = Path(shard_dir)
    manifest = load_manifest(shard_dir)
    shards = []
    for entry in manifest["shards"]:
        if entry["split"] != split:
            continue
        info = ShardInfo(shard_dir / entry["name"], int(entry["samples"]), int(entry["bytes"]), entry["sha256"])
        if not info.path.is_file():
            raise ManifestError(f"{info.path}: listed in the manifest but missing")
        size = info.path.stat().st_size
        if size != info.bytes:
            raise ManifestError(f"{info.path}: {size} bytes, the manifest says {info.bytes}")
        if checksums and _sha256(info.path) != info.sha256:
            raise ManifestError(f"{info.path}: sha256 differs from the manifest")
        shards.append(info)
    if not shards:
        raise ManifestError(f"{shard_dir}: no shards of split '{split}'")
    log.info("%d %s shards, %d samples", len(shards), split, sum(s.samples for s in shards))
    return shards


def fingerprint(shards: list[ShardInfo]) -> str:
    """A short id of the shard list (names, sizes, checksums): a resumed run must read the same data."""
    text = json.dumps([[s.path.name, s.samples, s.bytes, s.sha256] for s in shards])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
