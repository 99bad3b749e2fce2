"""Fixtures for the render-job tests: a real Ray head (started and stopped by PID) and a corpus with bad files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data_prep.ray_head import RayHead
from tests.helpers.corpus import MAX_FILE_MB, big_pdf, encrypted_pdf, parquet, png_bytes


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
    encrypted_pdf(root / "bad/encrypted.pdf")
    (root / "bad/notes.pdf").write_bytes(b"<html><body>not a pdf</body></html>\n")
    (root / "bad/readme.txt").write_text("a note that is not a document\n")
    big_pdf(root / "bad/big.pdf", kib=int(MAX_FILE_MB * 1024) + 64)
    shutil.copy(root / "doc-00000.pdf", root / "sub/copy-of-doc-00000.pdf")
    parquet(root / "pages.parquet")
    (root / "scans").mkdir()
    (root / "scans/page.png").write_bytes(png_bytes(20))  # page images are one-page documents
    (root / "scans/photo.jpg").write_bytes(png_bytes(21, fmt="JPEG"))
    (root / "bad/broken.png").write_bytes(png_bytes(22)[:60])
    with open(os.path.join(os.fsencode(root), b"bad", b"caf\xe9.pdf"), "wb") as f:  # not UTF-8: must not stop the job
        f.write((root / "doc-00002.pdf").read_bytes())
    return root
