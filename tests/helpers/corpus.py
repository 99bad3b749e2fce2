"""Documents for the render-job tests: a big PDF, an encrypted one, page images, a Parquet page-image set, and the
reject reason each bad file must get."""

from __future__ import annotations

import io
from pathlib import Path


def big_pdf(path: Path, kib: int) -> None:
    """A valid PDF larger than `kib` KiB (incompressible text, page compression off)."""
    import random

    from reportlab.pdfgen import canvas

    rng = random.Random(0)
    c = canvas.Canvas(str(path), pagesize=(200, 200), invariant=1, pageCompression=0)
    size = 0
    while size < kib * 1024:
        line = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=60))
        c.drawString(5, 100, line)
        size += 80
    c.showPage()
    c.save()


def encrypted_pdf(path: Path) -> None:
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=(112, 112), invariant=1,
                      encrypt=pdfencrypt.StandardEncryption("secret", ownerPassword="owner"))
    c.drawString(10, 50, "SECRET")
    c.showPage()
    c.save()


def png_bytes(seed: int, size=(56, 84), fmt: str = "PNG") -> bytes:
    import random

    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(20):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        img.putpixel((x, y), tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    return buf.getvalue()


def parquet(path: Path) -> list[dict]:
    """A page-image set like the public ColPali/ViDoRe train sets; returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"image": {"bytes": png_bytes(i), "path": f"img{i}.png"}, "query": f"parquet question {i}"} for i in range(4)]
    rows.append({"image": {"bytes": png_bytes(1), "path": "img1.png"}, "query": "parquet question 1b"})  # same page
    rows.append({"image": {"bytes": png_bytes(9, fmt="JPEG"), "path": "img9.jpg"}, "query": "parquet question 9"})
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    return rows


BAD = {
    "bad/empty.pdf": "zero-byte",
    "bad/truncated.pdf": "truncated",
    "bad/encrypted.pdf": "encrypted",
    "bad/notes.pdf": "not a PDF",
    "bad/readme.txt": "not a PDF",
    "bad/big.pdf": "oversized",
    "sub/copy-of-doc-00000.pdf": "duplicate",
    "bad/broken.png": "unreadable image",
    "bad/caf\\xe9.pdf": "file name is not valid UTF-8",  # a Latin-1 name: escaped in rejects.jsonl
}
MAX_FILE_MB = 0.2
