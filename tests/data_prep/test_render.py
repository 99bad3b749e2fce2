"""The render job end to end: `ray job submit` to a real Ray head, shards read back with webdataset and checked independently."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pypdfium2 as pdfium
import pytest
import webdataset as wds
from PIL import Image

from data_prep.ray_head import submit_render_job
from data_prep.shards import verify
from data_prep.sources import escape_name
from pipeline.layout.lock import LOCK_NAME
from pipeline.procs import stop_process_group
from tests.helpers.corpus import BAD, MAX_FILE_MB, png_bytes
from tests.helpers.procs import ROOT

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)

ARGS = ["render.shard_size=3", "render.pages_per_task=2", "render.max_in_flight=2", f"render.max_file_mb={MAX_FILE_MB}",
        "render.eval_fraction=0.25", "render.split_seed=1", "render.progress=false"]


def plain_render(corpus: Path, out: Path, *extra: str, **kw) -> subprocess.Popen:
    """`python data_prep/render.py ...` without a cluster address: Ray starts locally."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    cmd = [sys.executable, "data_prep/render.py", "--input", str(corpus), "--output", str(out), *ARGS,
           "render.num_cpus=2", "render.object_store_mb=100", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, **kw)


@pytest.fixture(scope="module")
def job_out(ray_head, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    try:
        res = submit_render_job(ray_head.address, str(corpus), str(out), ARGS, working_dir=ROOT, timeout=240)
    except subprocess.CalledProcessError as e:
        raise AssertionError(f"job failed:\n{e.stdout[-3000:]}\n{e.stderr[-3000:]}") from e
    assert res.args == ["ray", "job", "submit", "--address", ray_head.address, "--working-dir", str(ROOT), "--", "python",
                        "data_prep/render.py", "--input", str(corpus), "--output", str(out), *ARGS]
    return out


@pytest.fixture(scope="module")
def samples(job_out) -> list[dict]:
    manifest = json.loads((job_out / "manifest.json").read_text())
    urls = [str(job_out / e["name"]) for e in manifest["shards"]]
    out = []
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        rec = json.loads(s["json"])
        out.append({"key": s["__key__"], "png": s["png"], "rec": rec, "shard": Path(s["__url__"]).name})
    return out


def good_pdfs(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*.pdf") if escape_name(p.relative_to(corpus).as_posix()) not in BAD)


def parquet_images(corpus: Path) -> dict[str, tuple[bytes, list[str]]]:
    """doc_id -> (image bytes, queries of every row showing that image), read straight from the file."""
    out: dict[str, tuple[bytes, list[str]]] = {}
    for row in pq.read_table(corpus / "pages.parquet").to_pylist():
        data = row["image"]["bytes"]
        did = hashlib.sha256(data).hexdigest()[:16]
        out.setdefault(did, (data, []))[1].append(row["query"])
    return out


def test_every_page_of_every_good_document_exactly_once(corpus, samples):
    expected = set()
    for p in good_pdfs(corpus):
        data = p.read_bytes()
        did = hashlib.sha256(data).hexdigest()[:16]
        expected |= {f"{did}-p{i:05d}" for i in range(len(pdfium.PdfDocument(data)))}
    expected |= {f"{did}-p00000" for did in parquet_images(corpus)}
    expected |= {f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}-p00000" for p in (corpus / "scans").iterdir()}
    keys = [s["key"] for s in samples]
    assert len(keys) == len(set(keys))
    assert set(keys) == expected


def test_png_equals_a_direct_pypdfium2_render(corpus, samples):
    pdf_samples = [s for s in samples if s["rec"]["source"].endswith(".pdf")]
    assert len(pdf_samples) > 20
    for s in pdf_samples:
        page = pdfium.PdfDocument(corpus / s["rec"]["source"])[s["rec"]["page"]]
        direct = np.asarray(page.render(scale=72 / 72).to_pil())
        got = np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB"))
        assert got.shape == direct.shape == (s["rec"]["height"], s["rec"]["width"], 3)
        assert np.array_equal(got, direct), s["key"]


def test_queries_land_on_their_pages(corpus, samples):
    wanted: dict[tuple[str, int], list[str]] = {}
    for line in (corpus / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        wanted.setdefault((q["doc"], q["page"]), []).append(q["query"])
    seen: dict[str, int] = {}
    for s in samples:
        rec = s["rec"]
        for q in rec["queries"]:
            seen[q] = seen.get(q, 0) + 1
        if rec["source"].endswith(".pdf"):
            assert rec["queries"] == wanted.get((rec["source"], rec["page"]), [])
            text = pdfium.PdfDocument(corpus / rec["source"])[rec["page"]].get_textpage().get_text_range()
            assert all(q in text for q in rec["queries"])
    assert set(seen) == {q for qs in wanted.values() for q in qs} | {
        q for _, qs in parquet_images(corpus).values() for q in qs}
    assert set(seen.values()) == {1}  # every query answered by exactly one page


def test_parquet_pages_and_their_queries(corpus, samples):
    by_doc = {s["rec"]["doc_id"]: s for s in samples if "pages.parquet#" in s["rec"]["source"]}
    images = parquet_images(corpus)
    assert set(by_doc) == set(images)
    for did, (data, queries) in images.items():
        s = by_doc[did]
        assert s["rec"]["queries"] == queries
        src = Image.open(io.BytesIO(data))
        if src.format == "PNG":
            assert s["png"] == data  # already lossless in the target format: passed through
        else:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(s["png"]))), np.asarray(src.convert("RGB")))
    assert sorted(len(q) for _, q in images.values()) == [1, 1, 1, 1, 2]  # the repeated image merged


def test_page_image_files_become_one_page_documents(corpus, samples):
    by_source = {s["rec"]["source"]: s for s in samples}
    png = by_source["scans/page.png"]
    assert png["png"] == (corpus / "scans/page.png").read_bytes()  # lossless already: passed through
    assert (png["rec"]["page"], png["rec"]["num_pages"], png["rec"]["dpi"]) == (0, 1, None)
    jpg = Image.open(corpus / "scans/photo.jpg").convert("RGB")
    got = Image.open(io.BytesIO(by_source["scans/photo.jpg"]["png"]))
    assert np.array_equal(np.asarray(got), np.asarray(jpg))  # decoded once, stored losslessly


def test_rejects_name_every_bad_file_with_its_reason(corpus, job_out):
    rows = [json.loads(line) for line in (job_out / "rejects.jsonl").read_text().splitlines()]
    got = {r["source"]: r["reason"] for r in rows}
    assert set(got) == set(BAD)
    for source, word in BAD.items():
        assert word in got[source], (source, got[source])


def test_manifest_checksums_and_counts_verify(job_out, samples):
    manifest = json.loads((job_out / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["settings"]["image_format"] == "png"
    for e in manifest["shards"]:
        data = (job_out / e["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
        assert e["samples"] == sum(1 for s in samples if s["shard"] == e["name"]) <= 3
    for split, info in manifest["splits"].items():
        assert info["samples"] == sum(1 for s in samples if s["rec"]["split"] == split)
        assert info["shards"] == sum(1 for e in manifest["shards"] if e["split"] == split)
    assert sorted(p.name for p in job_out.iterdir()) == sorted(
        [e["name"] for e in manifest["shards"]] + ["manifest.json", "rejects.jsonl", LOCK_NAME])


def test_split_is_by_document(samples):
    splits: dict[str, set[str]] = {}
    for s in samples:
        assert s["shard"].startswith(s["rec"]["split"] + "-")
        splits.setdefault(s["rec"]["doc_id"], set()).add(s["rec"]["split"])
    assert all(len(v) == 1 for v in splits.values())
    n_eval = sum(1 for v in splits.values() if v == {"eval"})
    assert n_eval == round(0.25 * len(splits))


def listening_addresses(pid: int) -> set[str]:
    """IP addresses that process `pid` and its descendants listen on."""
    root = psutil.Process(pid)
    pids = {pid} | {p.pid for p in root.children(recursive=True)}
    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    """mtime and size of every file but the lock (each job writes its name there), and of the directory itself (a
    temp file created and removed shows there)."""
    return {".": (d.stat().st_mtime_ns, 0)} | {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in d.iterdir()
                                               if p.name != LOCK_NAME}


def test_second_run_with_nothing_changed_writes_nothing(corpus, job_out):
    before = _snapshot(job_out)
    proc = plain_render(corpus, job_out)
    assert proc.wait(timeout=180) == 0
    assert _snapshot(job_out) == before


def test_kill_9_then_rerun_gives_the_manifest_of_an_uninterrupted_run(corpus, job_out, tmp_path):
    out = tmp_path / "killed"
    proc = plain_render(corpus, out, "render.max_in_flight=1", "render.pages_per_task=1",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out.is_dir() and any(p.suffix == ".tar" for p in out.iterdir())):
        assert proc.poll() is None and time.time() < deadline, "no shard appeared"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGSTOP)  # freeze the run (and its local Ray) where it is
    try:
        addrs = listening_addresses(proc.pid)
    finally:
        stop_process_group(proc, signal.SIGKILL)
    # security default: the Ray that a plain run starts listens on loopback only
    assert addrs and addrs <= {"127.0.0.1", "::ffff:127.0.0.1"}, addrs
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # its record stays, its lock died with it
    partial = json.loads((out / "manifest.partial.json").read_text())["shards"] if (out / "manifest.partial.json").exists() else []
    kept = {e["name"]: (out / e["name"]).stat().st_mtime_ns for e in partial}
    proc = plain_render(corpus, out)
    assert proc.wait(timeout=180) == 0
    assert (out / "manifest.json").read_bytes() == (job_out / "manifest.json").read_bytes()
    assert (out / "rejects.jsonl").read_bytes() == (job_out / "rejects.jsonl").read_bytes()
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # finished shards were kept, not redone
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in job_out.iterdir())


def test_a_second_job_into_a_busy_directory_is_refused_and_the_first_finishes_intact(corpus, job_out, tmp_path):
    """Another input into the same output directory while a job runs there: refused in one line naming the
    holder, nothing of its input written; the first job ends with the manifest of an undisturbed run."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "page.png").write_bytes(png_bytes(99))
    out = tmp_path / "out"
    first = plain_render(corpus, out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ((out / LOCK_NAME).is_file() and f'"pid": {first.pid}' in (out / LOCK_NAME).read_text()):
        assert first.poll() is None and time.time() < deadline, "the first job never took the lock"
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)  # the first job's driver holds the directory, frozen
    try:
        second = plain_render(other, out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = second.communicate(timeout=180)[0]
    finally:
        os.kill(first.pid, signal.SIGCONT)
    started = json.loads((out / LOCK_NAME).read_text())["started"]
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert second.returncode == 1 and "Traceback" not in log, log[-3000:]
    assert len(errors) == 1 and errors[0].endswith(f"{out} is in use by render job on host {socket.gethostname()}, "
                                                   f"PID {first.pid}, started {started} (lock {out / LOCK_NAME}; it is "
                                                   "released when that process ends): wait for it, or use another "
                                                   "directory"), log[-3000:]
    assert first.wait(timeout=240) == 0
    assert (out / "manifest.json").read_bytes() == (job_out / "manifest.json").read_bytes()
    assert verify(out) == [] and sorted(p.name for p in out.iterdir()) == sorted(p.name for p in job_out.iterdir())


def test_a_page_that_kills_its_worker_costs_only_that_page(ray_head):
    """A hard crash (not an exception) in a page range: the range is re-run page by page, the rest is kept."""
    import ray

    from data_prep.render import _isolate

    def pages_or_crash(jobs, settings):
        if any(j["key"] == "bad" for j in jobs):
            os._exit(1)  # what a segfault in a native renderer looks like to Ray
        return [{"key": j["key"], "image": b"i", "json": b"{}"} for j in jobs]

    ray.init(address=ray_head.gcs_address, log_to_driver=False)
    try:
        task = ray.remote(max_retries=0)(pages_or_crash)
        jobs = [{"key": k} for k in ("a", "bad", "c")]
        with pytest.raises(ray.exceptions.RayError):
            ray.get(task.remote(jobs, {}))
        out = _isolate(task, jobs, {})
    finally:
        ray.shutdown()
    assert [r["key"] for r in out] == ["a", "bad", "c"]
    assert "error" not in out[0] and "error" not in out[2] and out[1]["error"].startswith("worker failed")
