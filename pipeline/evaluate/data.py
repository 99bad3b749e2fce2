"""Evaluation sets: the eval split of a shard directory (pipeline.data.reader.ShardPages, the one page reader over
verified shards) or a page-image Parquet set.

Both yield `Page`s (key, PIL image, queries); every query of a page is relevant to that page only (grade 1).
Each set has a fingerprint of the content read: the same fingerprint means the same pages and queries, so scores
are comparable. Eval shards are always verified (sha256, size, sample count against the manifest) before a page
of them is used; a corrupt one stops the evaluation with one line naming it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from pipeline.data.reader import Page, ShardPages, decode_sample_image, with_limit


class ParquetEvalSet:
    """A page-image Parquet set: an `image` column (struct with `bytes`, or binary) and `query` (str) and/or
    `queries` (list of str). Rows repeating an image are one page with the union of their queries."""

    def __init__(self, path: str | Path, max_pages: int | None = None):
        self.path = Path(path)
        self.max_pages = max_pages
        self.name = str(self.path.resolve())
        data = self.path.read_bytes()  # hashed and parsed from the same bytes
        self.fingerprint = with_limit(hashlib.sha256(data).hexdigest()[:16], max_pages)
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

    def pages(self) -> Iterator[Page]:
        for key, data, queries in self._rows:
            yield Page(key, decode_sample_image(data, self.path, key), queries)


def _image_bytes(cell) -> bytes | None:
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    return cell if isinstance(cell, (bytes, bytearray)) and cell else None


def open_eval_set(shards: str | None, split: str, parquet: str | None, max_pages: int | None):
    """The Parquet set when `parquet` is given, else the `split` shards of `shards`."""
    if parquet:
        return ParquetEvalSet(parquet, max_pages)
    if not shards:
        raise ValueError("no evaluation set: set eval.shards (or data.shards) or eval.parquet")
    return ShardPages(shards, split, max_pages)
