"""Synthetic shards in the render job's format (docs/interfaces.md), written by the tests themselves."""

from __future__ import annotations

import hashlib
import io
import json
import random
import string
from pathlib import Path

import webdataset as wds
from PIL import Image, ImageDraw, ImageFont


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
                 no_query_every: int = 0) -> Path:
    """Write `n_pages` train pages (one distinct 3-letter code each, the query) plus a manifest; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    codes = set()
    while len(codes) < n_pages:
        codes.add("".join(rng.choice(string.ascii_uppercase) for _ in range(3)))
    codes = sorted(codes)
    rng.shuffle(codes)
    entries = []
    for s in range(0, n_pages, shard_size):
        name = f"train-{s // shard_size:06d}.tar"
        with wds.TarWriter(str(out / name)) as sink:
            for i in range(s, min(s + shard_size, n_pages)):
                doc_id = hashlib.sha256(f"doc{i}".encode()).hexdigest()[:16]
                queries = [] if no_query_every and i % no_query_every == 0 else [codes[i]]
                meta = {"doc_id": doc_id, "source": f"synthetic/doc{i}.pdf", "page": 0, "width": size,
                        "height": size, "dpi": 72, "text": codes[i], "queries": queries, "split": "train"}
                sink.write({"__key__": f"{doc_id}-p00000", "png": _page(codes[i], i % 3, size),
                            "json": json.dumps(meta).encode()})
        data = (out / name).read_bytes()
        entries.append({"name": name, "split": "train", "samples": min(shard_size, n_pages - s),
                        "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"version": 1, "settings": {"image_format": "png", "dpi": 72}, "input_fingerprint": "synthetic",
                "shards": entries, "splits": {"train": {"samples": n_pages, "shards": len(entries)}}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
