"""Fixtures for the render-job tests: a real Ray head (started and stopped by PID) and a corpus with bad files."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process started with start_new_session: `sig` to it (SIGKILL: to its whole group), then
    wait until every process of the group it created is gone (SIGKILL to the group as a last resort)."""
    try:
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)  # `ray start --block` drains and stops its children on SIGTERM
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    if not _group_gone(proc.pid, 15):
        os.killpg(proc.pid, signal.SIGKILL)
        _group_gone(proc.pid, 10)
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def ray_head():
    """`ray start --head --block` on free ports, bound to 127.0.0.1; yields the job API address."""
    ports = {k: free_port() for k in ("port", "dashboard-port", "ray-client-server-port",
                                      "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port")}
    temp_dir = tempfile.mkdtemp(prefix="rayt")  # short: Ray's unix sockets live under it
    cmd = ["ray", "start", "--head", "--num-cpus", "2", "--disable-usage-stats", "--dashboard-host", "127.0.0.1",
           "--node-ip-address", "127.0.0.1", "--temp-dir", temp_dir, "--block"]
    cmd += [f"--{k}={v}" for k, v in ports.items()]
    log = open(Path(temp_dir) / "head.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray head exited: {(Path(temp_dir) / 'head.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("ray head: job API did not answer in 90 s")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


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
}
MAX_FILE_MB = 0.2


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Synthetic PDFs (varying page counts) + queries.jsonl, a Parquet page-image set, and one file per reject reason."""
    from data_prep.synth import synthesize
    from pipeline.config import SynthConfig

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
    return root
