"""Checkpoint trust without DeepSpeed: a stand-in engine writes files like DeepSpeed's; a checkpoint is trusted only
when its completion marker is there and every recorded size and sha256 matches (bits flipped at the same size are
caught); otherwise the newest one that verifies is used (with a warning naming what was skipped and why), and with
none `find()` refuses rather than restart. A save that fills the disk is one line naming the directory and loses
no earlier checkpoint."""

import errno
import hashlib
import json
import logging
from pathlib import Path

import pytest

from pipeline.train.checkpoint import MARKER, Checkpointer, CheckpointError, DiskFull, problem

MODEL = "mp_rank_00_model_states.pt"
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def flip(path: Path, at: int) -> None:
    """Invert one byte of `path` in place: the size stays, the content changes."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


class FakeEngine:
    """Writes and 'loads' files named like a one-rank ZeRO checkpoint."""

    def __init__(self):
        self.loaded = None

    def save_checkpoint(self, save_dir, tag, save_latest=False):
        d = Path(save_dir) / tag
        d.mkdir(parents=True)
        (d / MODEL).write_bytes(b"m" * 1000)
        (d / OPTIM).write_bytes(b"o" * 3000)

    def load_checkpoint(self, load_dir, tag, **kwargs):
        self.loaded = tag


@pytest.fixture
def ckpt(tmp_path):
    c = Checkpointer(tmp_path, keep=3)
    for step in (2, 4, 6):
        c.save(FakeEngine(), step, {"stream": {"pos": step}, "skipped": 0})
    return c


def test_marker_records_every_file_and_is_written_last(ckpt):
    path = ckpt.dir / "step-00000006"
    recorded = json.loads((path / MARKER).read_text())
    assert recorded["step"] == 6
    names = [MODEL, OPTIM, "rng-rank0.json", "trainer_state.json"]
    assert recorded["files"] == {n: {"bytes": (path / n).stat().st_size,
                                     "sha256": hashlib.sha256((path / n).read_bytes()).hexdigest()} for n in names}
    assert recorded["files"][MODEL]["bytes"] == 1000 and recorded["files"][OPTIM]["bytes"] == 3000
    assert (ckpt.dir / "latest").read_text() == "step-00000006" and not list(ckpt.dir.glob("tmp-*"))
    engine = FakeEngine()
    assert ckpt.load(engine)["step"] == 6 and engine.loaded == "step-00000006"


@pytest.mark.parametrize("damage,why", [
    (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    (lambda p: (p / MODEL).write_bytes(b"m" * 10), f"{MODEL} has 10 bytes, 1000 recorded"),
    (lambda p: (p / OPTIM).write_bytes(b""), f"{OPTIM} has 0 bytes, 3000 recorded"),
    (lambda p: (p / MARKER).unlink(), f"no {MARKER} (the save did not finish)"),
    (lambda p: flip(p / OPTIM, 1234), f"{OPTIM} does not match the sha256 recorded at save (same size, other bytes)"),
    (lambda p: flip(p / "trainer_state.json", 3), "trainer_state.json does not match the sha256 recorded at save"),
])
def test_incomplete_latest_falls_back_to_newest_complete(ckpt, caplog, damage, why):
    damage(ckpt.dir / "step-00000006")
    engine = FakeEngine()
    with caplog.at_level(logging.WARNING):
        state = ckpt.load(engine)
    assert state["step"] == 4 and engine.loaded == "step-00000004"
    assert f"skipped checkpoint step-00000006 ({why}" in caplog.text and "; resuming from step-00000004" in caplog.text


def test_latest_naming_a_missing_tag_falls_back(ckpt, caplog):
    (ckpt.dir / "latest").write_text("step-00000099")
    with caplog.at_level(logging.WARNING):
        assert ckpt.find().name == "step-00000006"
    assert "step-00000099 (missing)" in caplog.text


def test_none_complete_refuses_with_one_line_naming_each(ckpt):
    for step in (2, 4, 6):
        (ckpt.dir / f"step-{step:08d}" / MODEL).write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        ckpt.load(FakeEngine())
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"no complete and intact checkpoint in {ckpt.dir}: step-00000006 (")
    assert all(f"step-{s:08d} ({MODEL} has 0 bytes, 1000 recorded)" in msg for s in (2, 4, 6))
    assert "Refusing to restart from step 0" in msg


def test_latest_without_any_checkpoint_left_refuses(tmp_path):
    c = Checkpointer(tmp_path)
    c.dir.mkdir()
    (c.dir / "latest").write_text("step-00000010")
    with pytest.raises(CheckpointError, match=r"step-00000010 \(missing\)"):
        c.find()


def test_no_checkpoints_means_a_fresh_start(tmp_path):
    assert Checkpointer(tmp_path).find() is None
    c = Checkpointer(tmp_path)
    c.dir.mkdir()
    (c.dir / "tmp-step-00000002").mkdir()  # a first save that never finished: nothing was ever complete
    assert c.find() is None


def test_pruning_keeps_the_newest_complete_and_never_the_only_one(tmp_path):
    c = Checkpointer(tmp_path, keep=1)
    c.save(FakeEngine(), 2, {})
    c.save(FakeEngine(), 4, {})
    assert [p.name for p in c.tags()] == ["step-00000004"]
    (c.dir / "step-00000004" / OPTIM).write_bytes(b"")  # the newest breaks: step 2 is already gone (keep=1)...
    c.save(FakeEngine(), 6, {})  # ...a later save still keeps a complete one, and drops the broken older one
    assert [p.name for p in c.tags()] == ["step-00000006"] and c.find().name == "step-00000006"
    # Broken newest, good older: pruning (as after any save) must not delete the only complete checkpoint.
    c = Checkpointer(tmp_path / "b", keep=1)
    c.save(FakeEngine(), 2, {})
    FakeEngine().save_checkpoint(c.dir, "step-00000008")  # a step dir without marker (e.g. copied in by hand)
    c._prune()
    assert {p.name for p in c.tags()} == {"step-00000002", "step-00000008"}
    assert [p.name for p in c.complete()] == ["step-00000002"]


def test_a_resave_after_fallback_replaces_the_broken_tag(ckpt):
    (ckpt.dir / "step-00000006" / OPTIM).write_bytes(b"")
    assert ckpt.find().name == "step-00000004"
    ckpt.save(FakeEngine(), 5, {})
    ckpt.save(FakeEngine(), 6, {})  # the resumed run reaches step 6 again
    assert [p.name for p in ckpt.complete()] == ["step-00000006", "step-00000005", "step-00000004"]


def test_every_checkpoint_flipped_refuses_in_one_line(ckpt):
    """Bits flipped at the same size in every checkpoint (size checks alone would trust them): one line, no step 0."""
    for step in (2, 4, 6):
        flip(ckpt.dir / f"step-{step:08d}" / OPTIM, step)
    with pytest.raises(CheckpointError) as err:
        ckpt.load(FakeEngine())
    msg = str(err.value)
    assert "\n" not in msg and all(f"step-{s:08d} ({OPTIM} does not match the sha256" in msg for s in (2, 4, 6))
    assert "Refusing to restart from step 0" in msg


def test_ranks_hash_disjoint_shares_that_cover_every_file(ckpt):
    """find() on W ranks: rank r hashes every W-th recorded file from r, so each file is hashed once."""
    path = ckpt.dir / "step-00000006"
    names = sorted(json.loads((path / MARKER).read_text())["files"])
    flip(path / names[1], 0)
    assert [problem(path, content=True, share=(r, 2)) is None for r in (0, 1)] == [True, False]
    assert [problem(path, content=True, share=(r, 3)) is None for r in (0, 1, 2)] == [True, False, True]
    assert problem(path) is None  # sizes alone cannot see it


def test_a_marker_from_before_content_hashes_is_checked_by_size(ckpt):
    path = ckpt.dir / "step-00000006"
    marker = json.loads((path / MARKER).read_text())
    marker["files"] = {n: r["bytes"] for n, r in marker["files"].items()}
    (path / MARKER).write_text(json.dumps(marker))
    assert ckpt.find() == path
    (path / MODEL).write_bytes(b"m" * 10)
    assert problem(path) == f"{MODEL} has 10 bytes, 1000 recorded"


def test_pruning_never_keeps_a_corrupt_checkpoint_over_a_good_one(tmp_path):
    """keep=1: the newest is found corrupt and the run resumes from the older; the next save (an earlier step than
    the corrupt one) must not prune the good checkpoint it resumed from in favour of the corrupt one."""
    c = Checkpointer(tmp_path, keep=2)
    for step in (2, 4):
        c.save(FakeEngine(), step, {})
    flip(c.dir / "step-00000004" / OPTIM, 5)
    resumed = Checkpointer(tmp_path, keep=1)
    assert resumed.find().name == "step-00000002"
    resumed.save(FakeEngine(), 3, {})
    assert resumed.find().name == "step-00000003" and "step-00000004" not in [p.name for p in resumed.complete()]


class FullDisk(FakeEngine):
    def save_checkpoint(self, save_dir, tag, save_latest=False):
        (Path(save_dir) / tag).mkdir(parents=True)
        (Path(save_dir) / tag / MODEL).write_bytes(b"m" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_loses_no_checkpoint(ckpt):
    before = {p.name: sorted(q.name for q in p.iterdir()) for p in ckpt.tags()}
    with pytest.raises(DiskFull) as err:
        ckpt.save(FullDisk(), 8, {})
    msg = str(err.value)
    assert msg == (f"no space left on the device of {ckpt.dir} while writing checkpoint step-00000008: the last "
                   "complete checkpoint step-00000006 is intact; free space and rerun the same command to resume")
    assert {p.name: sorted(q.name for q in p.iterdir()) for p in ckpt.tags()} == before
    assert not list(ckpt.dir.glob("tmp-*")) and ckpt.find().name == "step-00000006"
