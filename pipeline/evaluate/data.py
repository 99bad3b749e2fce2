"""Evaluation sets: the eval split of a shard directory (through the one shard reader) or a page-image Parquet set.

Both yield pages as (key, PIL image, queries); every query of a page is relevant to that page only (grade 1).
Each set has a fingerprint computed from the bytes actually read: the same fingerprint means the same pages and
queries, so scores are comparable. Eval shards are always verified (sha256, size, sample count against the
manifest) before a page of them is used; a corrupt one stops the evaluation with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from pipeline.data.reader import decode_image, queries_of, read_shard
from pipeline.layout.shards import ShardInfo, split_shards, verify_walk, walk_tar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalPage:
    """One page of an evaluation set."""

    key: str
    image: Image.Image
    queries: list[str]


class ShardEvalSet:
    """The `split` shards of a render-job output directory, verified, read in manifest order."""

    def __init__(self, shard_dir: str | Path, split: str = "eval", max_pages: int | None = None):
        self.shards = split_shards(shard_dir, split)
        self.max_pages = max_pages
        self.name = f"{Path(shard_dir).resolve()}:{split}"
        self.fingerprint = _with_limit(verified_fingerprint(self.shards), max_pages)
        self.num_pages = min(sum(s.samples for s in self.shards), max_pages or 1 << 62)

    def pages(self) -> Iterator[EvalPage]:
        i = 0
        for shard in self.shards:
            for sample in read_shard(shard):  # the bytes read are checked again against the same sha256
                if self.max_pages is not None and i >= self.max_pages:
                    return
                yield EvalPage(sample.key, decode_image(sample.image, shard.path, sample.key), queries_of(sample.meta))
                i += 1


def verified_fingerprint(shards: list[ShardInfo]) -> str:
    """A short id of the shards' verified content: each shard's bytes are hashed and counted here and must match
    the manifest (ShardError naming the shard otherwise); the id is computed from those hashes."""
    parts = []
    for s in shards:
        samples, sha, size = walk_tar(s.path, keep=(), name=str(s.path))
        verify_walk(s, sha, size, len(samples))
        parts.append([s.name, len(samples), size, sha])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class ParquetEvalSet:
    """A page-image Parquet set: an `image` column (struct with `bytes`, or binary) and `query` (str) and/or
    `queries` (list of str). Rows repeating an image are one page with the union of their queries."""

    def __init__(self, path: str | Path, max_pages: int | None = None):
        self.path = Path(path)
        self.max_pages = max_pages
        self.name = str(self.path.resolve())
        data = self.path.read_bytes()  # hashed and parsed from the same bytes
        self.fingerprint = _with_limit(hashlib.sha256(data).hexdigest()[:16], max_pages)
        self._rows = self._read(data)
        self.num_pages = len(self._rows)

    def _read(self, data: bytes) -> list[tuple[str, bytes, list[str]]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(data))
        names = table.schema.names
        img_col = "image" if "image" in names else next(
            (n for n in names if _image_bytes(table.column(n)[0].as_py()) is not None), None) if len(table) else None
        if img_col is None:
            raise ValueError(f"{self.path}: no image column (struct with bytes, or binary)")
        pages: dict[str, tuple[bytes, list[str]]] = {}
        for rec in table.select([c for c in (img_col, "query", "queries") if c in names]).to_pylist():
            data = _image_bytes(rec[img_col])
            if data is None:
                continue
            key = hashlib.sha256(data).hexdigest()[:16]
            if key not in pages:
                if self.max_pages is not None and len(pages) >= self.max_pages:
                    continue
                pages[key] = (data, [])
            qs = pages[key][1]
            for q in ([rec.get("query")] if rec.get("query") else []) + list(rec.get("queries") or []):
                if q not in qs:
                    qs.append(q)
        return [(k, d, qs) for k, (d, qs) in pages.items()]

    def pages(self) -> Iterator[EvalPage]:
        for key, data, queries in self._rows:
            yield EvalPage(key, decode_image(data, self.path, key), queries)


def _image_bytes(cell) -> bytes | None:
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    return cell if isinstance(cell, (bytes, bytearray)) and cell else None


def _with_limit(fp: str, max_pages: int | None) -> str:
    """A page limit makes another eval set: fold it into the fingerprint."""
    if max_pages is None:
        return fp
    return hashlib.sha256(f"{fp}:{max_pages}".encode()).hexdigest()[:16]


def open_eval_set(shards: str | None, split: str, parquet: str | None, max_pages: int | None):
    """The Parquet set when `parquet` is given, else the `split` shards of `shards`."""
    if parquet:
        return ParquetEvalSet(parquet, max_pages)
    if not shards:
        raise ValueError("no evaluation set: set eval.shards (or data.shards) or eval.parquet")
    return ShardEvalSet(shards, split, max_pages)
