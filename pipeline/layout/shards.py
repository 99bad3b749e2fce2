"""The shard directory: the contract between the render job (writer) and training, evaluation and serving (readers):
shard names, sample keys, the manifest, and the checks of shards against it (the tar format: pipeline/layout/tars.py).

A shard directory holds `manifest.json`, the shards `{split}-{index:06d}.tar` and `rejects.jsonl`.

- A shard is an uncompressed USTAR tar. A sample is the run of members `{key}.{ext}` sharing one key (members of a
  sample are adjacent, extensions in sorted order); the key is `{doc_id}-p{page:05d}` (doc_id = first 16 hex of
  the sha256 of the source file's bytes; page 0-based) and never holds a '.' or a '/'. Members: one image
  (`png` or `jpg`, as the manifest's `settings.image_format` says; readers also take `jpeg` and `webp`) and
  `json`: `{"doc_id", "source", "page", "width", "height", "dpi", "text", "queries": [str, ...], "split"}`.
  Every query of a sample is relevant to that page only.
- `manifest.json`: `{"version": 1, "settings": {...}, "input_fingerprint": str, "shards": [{"name", "split",
  "samples", "bytes", "sha256"}, ...], "splits": {split: {"samples": n, "shards": n}}}` (the render job adds
  `plan` to entries and counts of documents, pages, rejects and queries).
- A shard name is data, never a path: reading a manifest accepts only a plain base name `{split}-NNNNNN.tar` of
  the entry's split, not a symlink, resolving inside the shard directory, each name once. Nothing hands a
  manifest string to an opener that interprets URLs (webdataset's `pipe:` runs a shell command).
- Shards are written to a temporary name and renamed when complete, with fixed member order and metadata, so
  the same samples give the same bytes (pipeline/layout/tars.py). A reader verifies a shard (size, sha256, sample
  count) before it computes anything from it (pipeline/data/reader.py reads samples; `verify_dir` checks a whole
  directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.layout.files import atomic_write
from pipeline.layout.tars import META_EXT, ShardError, walk_tar

MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"  # shards finished by an interrupted render run: read back by the next run
REJECTS = "rejects.jsonl"
SPLITS = ("train", "eval")
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")  # in order of preference when a sample holds several
_SPLIT = r"[A-Za-z0-9_]+"
_NAME = re.compile(rf"({_SPLIT})-(\d{{6}})\.tar")
_SHA = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest or shard directory that cannot be trusted; the message is one line naming the file or entry."""


def error_line(err: Exception) -> str:
    """The one-line message of a ManifestError/ShardError, also when a DataLoader worker re-raised it wrapped in
    its traceback text (the original message is then the last line, after the exception's class name)."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    last = lines[-1]
    for cls in (ShardError, ManifestError):
        prefix = f"{cls.__module__}.{cls.__qualname__}: "
        if last.startswith(prefix):
            return last[len(prefix):]
    return last


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def sample_key(doc_id: str, page: int) -> str:
    return f"{doc_id}-p{page:05d}"


@dataclass(frozen=True)
class ShardInfo:
    """One manifest entry after its name was validated: `path` lies inside the shard directory."""

    path: Path
    split: str
    samples: int
    bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def build_manifest(settings: dict, input_fingerprint: str, entries: list[dict], extra: dict | None = None) -> dict:
    """manifest.json's content: the entries (in shard order), per-split totals, and `extra` fields."""
    splits = sorted({e["split"] for e in entries} | set(SPLITS))
    totals = {s: {"samples": sum(e["samples"] for e in entries if e["split"] == s),
                  "shards": sum(1 for e in entries if e["split"] == s)} for s in splits}
    return {"version": 1, "settings": settings, "input_fingerprint": input_fingerprint, "shards": entries,
            "splits": totals, **(extra or {})}


def json_bytes(obj) -> bytes:
    """The canonical JSON bytes of manifest files (sorted keys, UTF-8, newline at the end)."""
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_manifest(shard_dir: str | Path, manifest: dict) -> Path:
    return atomic_write(Path(shard_dir) / MANIFEST, json_bytes(manifest))


# ---- reading and checking ------------------------------------------------------------------------------------


def check_name(name: object, split: object, shard_dir: Path, where: str) -> Path:
    """The path of a manifest entry's shard, or ManifestError naming `where` when `name` is not a plain shard name
    of `split` inside `shard_dir`."""
    if not isinstance(name, str) or not isinstance(split, str):
        raise ManifestError(f"{where}: name and split must be strings")
    if "\0" in name:
        raise ManifestError(f"{where}: shard name {name!r} holds a NUL byte")
    if os.path.isabs(name) or name.startswith("\\"):
        raise ManifestError(f"{where}: shard name {name!r} is an absolute path; only plain shard names are read")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", name):
        raise ManifestError(f"{where}: shard name {name!r} has a URL scheme; only plain shard names are read")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ManifestError(f"{where}: shard name {name!r} is a path; only plain shard names are read")
    m = _NAME.fullmatch(name)
    if m is None:
        raise ManifestError(f"{where}: shard name {name!r} does not match {{split}}-NNNNNN.tar")
    if m.group(1) != split:
        raise ManifestError(f"{where}: shard name {name!r} is not of the entry's split {split!r}")
    path = shard_dir / name
    if path.is_symlink():
        raise ManifestError(f"{where}: shard {name} is a symlink; shards must be plain files in {shard_dir}")
    if path.resolve().parent != shard_dir.resolve():
        raise ManifestError(f"{where}: shard {name} resolves outside {shard_dir}")
    return path


def _entry(e: object, i: int, shard_dir: Path, manifest: Path) -> ShardInfo:
    where = f"{manifest} shards[{i}]"
    if not isinstance(e, dict):
        raise ManifestError(f"{where}: an entry must be an object")
    missing = [k for k in ("name", "split", "samples", "bytes", "sha256") if k not in e]
    if missing:
        raise ManifestError(f"{where}: missing {', '.join(missing)}")
    where = f"{manifest} shards[{i}] ({e['name']!r})"
    path = check_name(e["name"], e["split"], shard_dir, where)
    for k in ("samples", "bytes"):
        if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < 0:
            raise ManifestError(f"{where}: {k} must be a non-negative integer, not {e[k]!r}")
    if not isinstance(e["sha256"], str) or not _SHA.fullmatch(e["sha256"]):
        raise ManifestError(f"{where}: sha256 must be 64 lowercase hex digits")
    return ShardInfo(path, e["split"], e["samples"], e["bytes"], e["sha256"])


def read_manifest(shard_dir: str | Path) -> tuple[dict, list[ShardInfo]]:
    """(manifest dict, every entry as a checked ShardInfo) of `shard_dir`; ManifestError on anything untrusted."""
    shard_dir = Path(shard_dir)
    path = shard_dir / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (run the render job first)")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("version") != 1:
        got = manifest.get("version") if isinstance(manifest, dict) else None
        raise ManifestError(f"{path}: unsupported manifest version {got!r}")
    if not isinstance(manifest.get("shards"), list):
        raise ManifestError(f"{path}: 'shards' must be a list")
    infos, seen = [], set()
    for i, e in enumerate(manifest["shards"]):
        info = _entry(e, i, shard_dir, path)
        if info.name in seen:
            raise ManifestError(f"{path} shards[{i}] ({info.name!r}): listed twice")
        seen.add(info.name)
        infos.append(info)
    return manifest, infos


def check_size(info: ShardInfo) -> None:
    """ShardError unless the shard exists with the manifest's byte count (cheap: one stat)."""
    if not info.path.is_file():
        raise ShardError(f"{info.path}: listed in the manifest but missing")
    size = info.path.stat().st_size
    if size != info.bytes:
        raise ShardError(f"{info.path}: {size} bytes, the manifest says {info.bytes}")


def split_shards(shard_dir: str | Path, split: str) -> list[ShardInfo]:
    """The checked entries of `split`, in manifest order, each present with its listed size."""
    _, infos = read_manifest(shard_dir)
    shards = [s for s in infos if s.split == split]
    if not shards:
        raise ManifestError(f"{Path(shard_dir) / MANIFEST}: no shards of split {split!r}")
    for s in shards:
        check_size(s)
    return shards


def shard_list_fingerprint(shards: list[ShardInfo]) -> str:
    """A short id of a shard list (names, sample counts, sizes, sha256s as the manifest lists them): the same id
    means the same samples. A reader that verified the shards' bytes against these entries may use it as the id of
    the content it read."""
    text = json.dumps([[s.name, s.samples, s.bytes, s.sha256] for s in shards])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def verify_walk(info: ShardInfo, sha256: str, size: int, samples: int) -> None:
    """ShardError unless what a walk of `info`'s shard found matches its manifest entry."""
    if size != info.bytes:
        raise ShardError(f"{info.path}: {size} bytes, the manifest says {info.bytes}")
    if sha256 != info.sha256:
        raise ShardError(f"{info.path}: sha256 differs from the manifest (the shard was changed or corrupted)")
    if samples != info.samples:
        raise ShardError(f"{info.path}: holds {samples} samples, the manifest says {info.samples}")


def verify_shard(info: ShardInfo) -> None:
    """ShardError unless `info`'s shard, read whole once, has the manifest's size, sha256 and sample count."""
    samples, sha, size = walk_tar(info.path, keep=(), name=str(info.path))
    verify_walk(info, sha, size, len(samples))


def verified_fingerprint(shards: list[ShardInfo]) -> str:
    """The shard-list fingerprint of `shards` after every shard's bytes were read and checked against its entry
    (ShardError naming the first that differs): the id of content that was verified, not just listed."""
    for shard in shards:
        verify_shard(shard)
    return shard_list_fingerprint(shards)


def verify_dir(shard_dir: str | Path) -> tuple[dict, list[str]]:
    """(manifest, problems): every entry's name, size, sha256 and sample count, and the split totals."""
    manifest, infos = read_manifest(shard_dir)
    problems = []
    for info in infos:
        try:
            check_size(info)
            verify_shard(info)
        except ShardError as e:
            problems.append(str(e))
    for split, total in (manifest.get("splits") or {}).items():
        listed = [i for i in infos if i.split == split]
        if total != {"samples": sum(i.samples for i in listed), "shards": len(listed)}:
            problems.append(f"{Path(shard_dir) / MANIFEST}: splits.{split} {total} disagrees with its shard entries")
    return manifest, problems


__all__ = ["IMAGE_EXTS", "MANIFEST", "META_EXT", "PARTIAL", "REJECTS", "SPLITS", "ManifestError", "ShardError",
           "ShardInfo", "build_manifest", "check_name", "check_size", "error_line", "json_bytes", "read_manifest",
           "sample_key", "shard_list_fingerprint", "shard_name", "split_shards", "verified_fingerprint", "verify_dir",
           "verify_shard", "verify_walk", "write_manifest"]
