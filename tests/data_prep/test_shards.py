"""Pieces of the render job without Ray: pixel cap, JPEG mode, deterministic tars, checksum verification, splits, inputs."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image
from reportlab.pdfgen import canvas

from data_prep import pages, shards, sources
from data_prep.config import RenderConfig
from pipeline.layout.tars import write_shard


def _letter_pdf(path: Path) -> Path:
    c = canvas.Canvas(str(path), pagesize=(612, 792), invariant=1)
    c.setFont("Helvetica-Bold", 48)
    c.drawString(72, 600, "Quarterly report")
    c.rect(72, 200, 300, 200, fill=1)
    c.showPage()
    c.save()
    return path


def _job(path: Path, doc: sources.Doc, page: int = 0) -> dict:
    return {"key": shards.sample_key(doc.doc_id, page), "kind": "pdf", "path": str(path), "page": page,
            "source": path.name, "doc_id": doc.doc_id, "split": "train", "queries": ["q"], "num_pages": doc.pages}


def test_pixel_cap_lowers_dpi_and_jpeg_stays_close_to_a_direct_render(tmp_path):
    pdf = _letter_pdf(tmp_path / "letter.pdf")
    doc = sources.probe_pdf("letter.pdf", str(pdf), 2**30)
    cfg = RenderConfig(dpi=200, max_pixels=2_000_000, image_format="jpeg", jpeg_quality=90)
    (res,) = pages.render_pages([_job(pdf, doc)], pages.render_settings(cfg))
    rec = json.loads(res["json"])
    assert 0.99 * 2_000_000 < rec["width"] * rec["height"] <= 2_000_000 < (612 * 200 / 72) * (792 * 200 / 72)
    assert rec["dpi"] == pytest.approx(72 * (2_000_000 / (612 * 792)) ** 0.5, rel=0.01)
    assert "Quarterly report" in rec["text"]
    img = np.asarray(Image.open(io.BytesIO(res["image"])).convert("RGB"), dtype=np.int16)
    direct = np.asarray(pdfium.PdfDocument(pdf)[0].render(scale=rec["dpi"] / 72).to_pil(), dtype=np.int16)
    assert img.shape == direct.shape == (rec["height"], rec["width"], 3)
    assert np.abs(img - direct).mean() < 2.0


def test_shard_bytes_do_not_depend_on_when_they_are_written(tmp_path):
    samples = [(f"k{i}", {"json": b'{"a": 1}', "png": bytes(range(i * 7 % 256)) * 3}) for i in range(5)]
    a = write_shard(tmp_path / "a.tar", samples)
    time.sleep(1.1)
    b = write_shard(tmp_path / "b.tar", samples)
    assert a == b and (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"k{i}.{e}" for i in range(5) for e in ("json", "png")]
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_verify_finds_a_corrupted_and_a_missing_shard(tmp_path):
    entries = []
    for name in ("train-000000.tar", "train-000001.tar"):
        w = write_shard(tmp_path / name, [("k", {"json": name.encode()})])
        entries.append({"name": name, "split": "train", "samples": 1, **w})
    (tmp_path / "manifest.json").write_text(json.dumps(shards.build_manifest({}, "fp", entries, {})))
    assert shards.verify(tmp_path) == []
    data = bytearray((tmp_path / "train-000000.tar").read_bytes())
    data[600] ^= 1
    (tmp_path / "train-000000.tar").write_bytes(bytes(data))
    (tmp_path / "train-000001.tar").unlink()
    assert shards.verify(tmp_path) == [
        f"{tmp_path}/train-000000.tar: sha256 differs from the manifest (the shard was changed or corrupted)",
        f"{tmp_path}/train-000001.tar: listed in the manifest but missing"]
    assert shards.main([str(tmp_path)]) == 1


def test_stale_shards_and_temporary_files_are_removed(tmp_path):
    names = ["train-000000.tar", "train-000001.tar", "eval-000000.tar", ".train-000002.tar.tmp-123", "notes.tar"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    removed = shards.remove_stale(tmp_path, keep={"train-000000.tar", "eval-000000.tar"})
    assert removed == [".train-000002.tar.tmp-123", "train-000001.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval-000000.tar", "notes.tar", "train-000000.tar"]


def test_split_is_a_seeded_function_of_the_document_set():
    ids = [f"{i:016x}" for i in range(50)]
    a = shards.assign_splits(ids, 0.2, seed=0)
    assert a == shards.assign_splits(list(reversed(ids)), 0.2, seed=0)
    assert sum(v == "eval" for v in a.values()) == 10
    assert a != shards.assign_splits(ids, 0.2, seed=1)
    assert set(shards.assign_splits(ids[:3], 0.01, 0).values()) == {"train", "eval"}
    assert set(shards.assign_splits(ids, 0.0, 0).values()) == {"train"}


def test_split_by_path_keeps_a_dataset_s_own_split():
    sources_ = ["train/a.pdf", "corpus/test/b.pdf", "val/train/c.pdf", "misc/d.pdf", "misc/e.pdf",
                "data/train-00000-of-00002.parquet#4", "data/test-00000-of-00001.parquet#0"]
    docs = [sources.Doc(f"{i:016x}", src, src, "pdf", 2) for i, src in enumerate(sources_)]
    settings = {"eval_fraction": 0.5, "split_seed": 0, "shard_size": 100, "split_by": "path"}
    got = {j["source"]: j["split"] for sp in shards.plan_shards(docs, {}, settings) for j in sp.jobs}
    assert {k: got[k] for k in sources_ if not k.startswith("misc")} == {
        "train/a.pdf": "train", "corpus/test/b.pdf": "eval", "val/train/c.pdf": "train",
        "data/train-00000-of-00002.parquet#4": "train", "data/test-00000-of-00001.parquet#0": "eval"}
    assert sorted([got["misc/d.pdf"], got["misc/e.pdf"]]) == ["eval", "train"]  # the rest: seeded, by document
    hashed = {j["source"]: j["split"] for sp in shards.plan_shards(docs, {}, {**settings, "split_by": "hash"})
              for j in sp.jobs}
    assert sum(v == "eval" for v in hashed.values()) == round(0.5 * len(docs))  # paths ignored
    with pytest.raises(ValueError, match="split_by"):
        pages.render_settings(RenderConfig(split_by="folder"))


def test_list_file_input_and_queries_matched_by_name_path_or_id(tmp_path):
    pdf = _letter_pdf(tmp_path / "a.pdf")
    (tmp_path / "docs").mkdir()
    listing = tmp_path / "docs" / "inputs.txt"
    listing.write_text("# my documents\n../a.pdf\n\n../missing.pdf\n")
    items, qfile = sources.discover(str(listing), None)
    assert items == [("../a.pdf", str(pdf)), ("../missing.pdf", str(tmp_path / "missing.pdf"))] and qfile is None
    assert sources.probe_pdf(*items[1], 2**30).reason == "missing file"
    doc = sources.probe_pdf(*items[0], 2**30)
    rows = [{"doc": "../a.pdf", "page": 0, "query": "by path"}, {"doc": doc.doc_id, "page": 0, "query": "by id"},
            {"doc": "a.pdf", "page": 0, "query": "by name"}, {"doc": "a.pdf", "page": 3, "query": "no such page"},
            {"doc": "b.pdf", "page": 0, "query": "no such doc"}]
    queries, unmatched = sources.attach_queries([doc], rows)
    assert queries == {(doc.doc_id, 0): ["by path", "by id", "by name"]} and unmatched == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="image_format"):
        pages.render_settings(RenderConfig(image_format="webp"))
