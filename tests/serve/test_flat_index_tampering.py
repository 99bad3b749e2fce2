"""The flat index refuses, in one line naming the file, every way its files can lie: bytes changed behind its
header (sha256), and, with the header resealed to match, offsets swapped, shifted or negative, code rows permuted,
all-NaN codes, page keys swapped, counts that disagree, a header that is not JSON and a tensor file that is not
safetensors. An untouched copy opens and answers (the control)."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.serve.engines.flat import META, TENSORS, FlatEngine
from tests.helpers.drawn import BUDGETS, draw_pages, draw_queries

FP16 = str(BUDGETS[0])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    d = tmp_path_factory.mktemp("flat") / "c"
    FlatEngine.create(d, BUDGETS, {"version": 1}).upsert(draw_pages(20, 0))
    return d


def reseal(d, tensors=None, meta_edit=None) -> None:
    """Rewrite the index's tensors and/or header and update the header's sha256, as a careful tamperer would."""
    if tensors is not None:
        save_file(tensors, str(d / TENSORS))
    meta = json.loads((d / META).read_text())
    if meta_edit:
        meta_edit(meta)
    meta["sha256"] = hashlib.sha256((d / TENSORS).read_bytes()).hexdigest()
    (d / META).write_text(json.dumps(meta))


def swapped(t):
    o = t[f"{FP16}/offsets"].clone()
    o[[3, 4]] = o[[4, 3]]
    return {**t, f"{FP16}/offsets": o}


def shifted(t):
    return {**t, f"{FP16}/offsets": t[f"{FP16}/offsets"] + 1}


def negative(t):
    o = t[f"{FP16}/offsets"].clone()
    o[1] = -4
    return {**t, f"{FP16}/offsets": o}


def permuted(t):
    codes = t[f"{FP16}/codes"]
    return {**t, f"{FP16}/codes": codes[torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))]}


def nan(t):
    return {**t, f"{FP16}/codes": torch.full_like(t[f"{FP16}/codes"], float("nan"))}


def swap_keys(meta):
    meta["keys"][0], meta["keys"][1] = meta["keys"][1], meta["keys"][0]


def drop_key(meta):
    meta["keys"].pop()
    meta["payloads"].pop()


CASES = [("offsets swapped", swapped, None, "offsets are not monotonic"),
         ("offsets shifted", shifted, None, "offsets do not cover 20 pages"),
         ("negative offset", negative, None, "offsets are not monotonic"),
         ("rows permuted", permuted, None, "do not match the collection's content fingerprint"),
         ("NaN codes", nan, None, "codes that are not finite numbers"),
         ("keys swapped", None, swap_keys, "do not match the collection's content fingerprint"),
         ("counts disagree", None, drop_key, "offsets do not cover 19 pages")]


@pytest.mark.parametrize("name,tensors,meta,message", CASES, ids=[c[0] for c in CASES])
def test_resealed_tampering_is_refused_in_one_line(pristine, tmp_path, name, tensors, meta, message):
    d = tmp_path / "c"
    shutil.copytree(pristine, d)
    reseal(d, tensors(load_file(str(d / TENSORS))) if tensors else None, meta)
    with pytest.raises(ValueError) as err:
        FlatEngine.open(d)
    assert message in str(err.value) and str(d) in str(err.value) and "\n" not in str(err.value)


def test_changed_bytes_unreadable_header_and_broken_tensors(pristine, tmp_path):
    d = tmp_path / "c"
    shutil.copytree(pristine, d)
    engine = FlatEngine.open(d)  # the control: an untouched copy opens and answers
    assert len(engine.search(draw_queries(1, 0), [(BUDGETS[0], 3)])[0]) == 3
    data = bytearray((d / TENSORS).read_bytes())
    data[-4] ^= 0xFF
    (d / TENSORS).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="content does not match its sha256"):
        FlatEngine.open(d)
    (d / TENSORS).write_bytes(b"not safetensors at all")
    reseal(d)
    with pytest.raises(ValueError, match=f"{d / TENSORS}: not a safetensors file"):
        FlatEngine.open(d)
    (d / META).write_text("{not json")
    with pytest.raises(ValueError, match=f"{d / META}: not a readable index header"):
        FlatEngine.open(d)


def test_a_save_killed_between_its_two_files_is_refused_then_repaired(pristine, tmp_path, monkeypatch):
    """Killed after the tensors, before the header: the header's sha256 names the old tensors, so the collection is
    refused in one line (never searched with one file old and one new); the next save makes it whole again."""
    d = tmp_path / "c"
    shutil.copytree(pristine, d)
    engine = FlatEngine.open(d)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.serve.engines.flat.atomic_write", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.upsert(draw_pages(2, 1, prefix="new"))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="content does not match its sha256") as err:
        FlatEngine.open(d)
    assert "\n" not in str(err.value)
    engine.save()
    assert FlatEngine.open(d).count() == 22
