"""Fixtures for the render-job tests: a real Ray head (started and stopped by PID) and a corpus with bad files."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from data_prep.ray_head import RayHead

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_head():
    """A real `ray start --head --block` on free 127.0.0.1 ports; yields the RayHead (job API at .address), stopped by PID."""
    head = RayHead(num_cpus=2)
    try:
        head.start()
        yield head
    finally:
        head.stop()
        assert head.proc is None


def _big_pdf(path: Path, kib: int) -> None:
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


def _encrypted_pdf(path: Path) -> None:
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


def _parquet(path: Path) -> list[dict]:
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


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Synthetic PDFs (varying page counts) + queries.jsonl, a Parquet page-image set, page image files,
    and one file per reject reason."""
    from data_prep.synth import synthesize
    from data_prep.config import SynthConfig

    root = tmp_path_factory.mktemp("corpus")
    synthesize(SynthConfig(out_dir=str(root), n_docs=16, pages_per_doc=1, pages_per_doc_max=4, seed=3))
    (root / "bad").mkdir()
    (root / "sub").mkdir()
    (root / "bad/empty.pdf").write_bytes(b"")
    good = (root / "doc-00001.pdf").read_bytes()
    (root / "bad/truncated.pdf").write_bytes(good[: len(good) // 2])
    _encrypted_pdf(root / "bad/encrypted.pdf")
    (root / "bad/notes.pdf").write_bytes(b"<html><body>not a pdf</body></html>\n")
    (root / "bad/readme.txt").write_text("a note that is not a document\n")
    _big_pdf(root / "bad/big.pdf", kib=int(MAX_FILE_MB * 1024) + 64)
    shutil.copy(root / "doc-00000.pdf", root / "sub/copy-of-doc-00000.pdf")
    _parquet(root / "pages.parquet")
    (root / "scans").mkdir()
    (root / "scans/page.png").write_bytes(png_bytes(20))  # page images are one-page documents
    (root / "scans/photo.jpg").write_bytes(png_bytes(21, fmt="JPEG"))
    (root / "bad/broken.png").write_bytes(png_bytes(22)[:60])
    with open(os.path.join(os.fsencode(root), b"bad", b"caf\xe9.pdf"), "wb") as f:  # not UTF-8: must not stop the job
        f.write((root / "doc-00002.pdf").read_bytes())
    return root
