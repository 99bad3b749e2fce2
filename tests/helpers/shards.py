"""Synthetic shards in the render job's format (pipeline/layout/shards.py), written by the tests through that module."""

from __future__ import annotations

import hashlib
import io
import json
import random
import string
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pipeline.layout.shards import build_manifest, sample_key, shard_name, write_manifest
from pipeline.layout.tars import write_shard


def _page(code: str, row: int, size: int) -> bytes:
    img = Image.new("RGB", (size, size), "white")
    try:
        font = ImageFont.load_default(size=20)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    ImageDraw.Draw(img).text((8, 4 + 28 * row), code, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_shards(out: Path, n_pages: int = 48, shard_size: int = 16, seed: int = 0, size: int = 112,
                 no_query_every: int = 0, split: str = "train", first_doc: int = 0) -> Path:
    """Write `n_pages` pages of `split` (one distinct 3-letter code each, the query) plus a manifest; returns `out`.
    Documents are numbered from `first_doc` (their ids, and so the page keys, follow the number)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    codes = set()
    while len(codes) < n_pages:
        codes.add("".join(rng.choice(string.ascii_uppercase) for _ in range(3)))
    codes = sorted(codes)
    rng.shuffle(codes)
    entries = []
    for s in range(0, n_pages, shard_size):
        name = shard_name(split, s // shard_size)
        samples = []
        for i in range(s, min(s + shard_size, n_pages)):
            doc_id = hashlib.sha256(f"doc{first_doc + i}".encode()).hexdigest()[:16]
            queries = [] if no_query_every and i % no_query_every == 0 else [codes[i]]
            meta = {"doc_id": doc_id, "source": f"synthetic/doc{i}.pdf", "page": 0, "width": size,
                    "height": size, "dpi": 72, "text": codes[i], "queries": queries, "split": split}
            samples.append((sample_key(doc_id, 0), {"png": _page(codes[i], i % 3, size),
                                                    "json": json.dumps(meta).encode()}))
        entries.append({"name": name, "split": split, **write_shard(out / name, samples)})
    write_manifest(out, build_manifest({"image_format": "png", "dpi": 72}, "synthetic", entries))
    return out
