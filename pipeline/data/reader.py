"""The one shard reader: training (pipeline/data/stream.py), evaluation and `serve index` read samples through it.

Shards are opened only through `ShardInfo` paths that pipeline.layout.shards validated (plain names inside the
shard directory); no URL-interpreting opener ever sees a manifest string. Two ways in:

- `scan_shard(info)`: one sequential pass over a (large) training shard that hashes every byte, locates every
  member and parses the JSON records; the sha256 (when `verify`), the byte count and the sample count are
  checked against the manifest. Images are read later by offset (`read_member`) and decoded by
  `decode_sample_image`.
- `read_shard(info)`: a (small) eval shard read whole into memory, verified, and served from those same bytes,
  so every number computed from it comes from verified bytes. `ShardPages` reads a split's pages this way for
  evaluation and indexing.

A bad sample (no image, a JSON record that does not parse, an image that does not decode) is a `ShardError` of
one line naming the shard and the sample key; callers that may skip bad samples pass `on_bad` and count them.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.layout.shards import (IMAGE_EXTS, META_EXT, ShardError, ShardInfo, split_shards, verified_fingerprint,
                                    verify_walk)
from pipeline.layout.tars import walk_tar

OnBad = Callable[[ShardError], None]


@dataclass(frozen=True)
class ScannedSample:
    """Where one sample's image lies in its shard, and its parsed JSON record."""

    key: str
    ext: str
    offset: int
    size: int
    meta: dict


@dataclass(frozen=True)
class Sample:
    """One sample read from verified bytes: its image bytes (not decoded) and JSON record."""

    key: str
    ext: str
    image: bytes
    meta: dict


def _meta(info: ShardInfo, key: str, raw: bytes | None) -> dict:
    if raw is None:
        raise ShardError(f"{info.path}: sample {key}: no {META_EXT} record")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ShardError(f"{info.path}: sample {key}: the {META_EXT} record does not parse") from None
    if not isinstance(meta, dict):
        raise ShardError(f"{info.path}: sample {key}: the {META_EXT} record is not an object")
    return meta


def _image_ext(info: ShardInfo, key: str, members: dict) -> str:
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    if ext is None:
        raise ShardError(f"{info.path}: sample {key}: no image member ({', '.join(IMAGE_EXTS)})")
    return ext


def _handle(err: ShardError, on_bad: OnBad | None) -> None:
    if on_bad is None:
        raise err
    on_bad(err)


def scan_shard(info: ShardInfo, verify: bool = True, on_bad: OnBad | None = None) -> list[ScannedSample]:
    """Every sample of `info`'s shard, located and with its JSON record, after one hashed pass over the file.

    Always checks the byte count and the sample count against the manifest; with `verify` every byte is read
    and the sha256 checked too (without it only headers and JSON records are read)."""
    samples, sha, size = walk_tar(info.path, keep=(META_EXT,), name=str(info.path), hashed=verify)
    verify_walk(info, sha if verify else info.sha256, size, len(samples))
    out = []
    for s in samples:
        try:
            ext = _image_ext(info, s.key, s.members)
            offset, length = s.members[ext]
            out.append(ScannedSample(s.key, ext, offset, length, _meta(info, s.key, s.small.get(META_EXT))))
        except ShardError as e:
            _handle(e, on_bad)
    return out


def read_member(f, sample: ScannedSample) -> bytes:
    """The image bytes of a scanned sample from an open shard file `f`."""
    f.seek(sample.offset)
    return f.read(sample.size)


def read_shard(info: ShardInfo, on_bad: OnBad | None = None) -> Iterator[Sample]:
    """The samples of `info`'s shard in order, from its bytes read once into memory and verified first (size,
    sha256, sample count): nothing is yielded from a shard whose bytes differ from the manifest."""
    data = info.path.read_bytes()
    verify_walk(info, hashlib.sha256(data).hexdigest(), len(data), info.samples)  # the bytes, before any parsing
    samples, _, _ = walk_tar(io.BytesIO(data), keep=(META_EXT, *IMAGE_EXTS), name=str(info.path), hashed=False)
    verify_walk(info, info.sha256, len(data), len(samples))  # and the sample count
    for s in samples:
        try:
            ext = _image_ext(info, s.key, s.members)
            meta = _meta(info, s.key, s.small.get(META_EXT))
        except ShardError as e:
            _handle(e, on_bad)
            continue
        yield Sample(s.key, ext, s.small[ext], meta)


def decode_sample_image(data: bytes, shard: object, key: str):
    """Decode image bytes to an RGB PIL image; ShardError naming `shard` and `key` when they do not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise ShardError(f"{shard}: sample {key}: the image does not decode (not an image format PIL knows)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ShardError(f"{shard}: sample {key}: the image does not decode ({reason})") from None


def queries_of(meta: dict) -> list[str]:
    """The non-empty queries of a sample's JSON record."""
    return [q for q in meta.get("queries") or [] if isinstance(q, str) and q]


@dataclass(frozen=True)
class Page:
    """One page to encode: its key, decoded image and queries (each relevant to this page only)."""

    key: str
    image: Any  # PIL.Image.Image
    queries: list[str]


class ShardPages:
    """The pages of a split's shards, in manifest order, from verified bytes: every shard's size, sha256 and sample
    count are checked at construction (a corrupt shard fails here, naming it) and again as it is read.
    `fingerprint` identifies the content (with a page limit folded in), `name` the directory and split."""

    def __init__(self, shard_dir: str | Path, split: str, max_pages: int | None = None):
        self.shards = split_shards(shard_dir, split)
        self.max_pages = max_pages
        self.name = f"{Path(shard_dir).resolve()}:{split}"
        self.fingerprint = with_limit(verified_fingerprint(self.shards), max_pages)
        self.num_pages = min(sum(s.samples for s in self.shards), max_pages or 1 << 62)

    def pages(self) -> Iterator[Page]:
        i = 0
        for shard in self.shards:
            for sample in read_shard(shard):  # the bytes read are checked again against the same sha256
                if self.max_pages is not None and i >= self.max_pages:
                    return
                image = decode_sample_image(sample.image, shard.path, sample.key)
                yield Page(sample.key, image, queries_of(sample.meta))
                i += 1


def with_limit(fp: str, max_pages: int | None) -> str:
    """A page limit makes another page set: fold it into the fingerprint."""
    if max_pages is None:
        return fp
    return hashlib.sha256(f"{fp}:{max_pages}".encode()).hexdigest()[:16]

