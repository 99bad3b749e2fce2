"""Checkpoint trust without DeepSpeed: a stand-in engine writes files like DeepSpeed's; a checkpoint is trusted only
when its completion marker is there and every recorded size matches; otherwise the newest complete one is used
(with a warning naming what was skipped), and with none complete `find()` refuses rather than restart."""

import json
import logging
from pathlib import Path

import pytest

from pipeline.train.checkpoint import MARKER, Checkpointer, CheckpointError

MODEL = "mp_rank_00_model_states.pt"
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


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
    assert recorded["files"] == {MODEL: 1000, OPTIM: 3000, "rng-rank0.json": (path / "rng-rank0.json").stat().st_size,
                                 "trainer_state.json": (path / "trainer_state.json").stat().st_size}
    assert (ckpt.dir / "latest").read_text() == "step-00000006" and not list(ckpt.dir.glob("tmp-*"))
    engine = FakeEngine()
    assert ckpt.load(engine)["step"] == 6 and engine.loaded == "step-00000006"


@pytest.mark.parametrize("damage,why", [
    (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    (lambda p: (p / MODEL).write_bytes(b"m" * 10), f"{MODEL} has 10 bytes, 1000 recorded"),
    (lambda p: (p / OPTIM).write_bytes(b""), f"{OPTIM} has 0 bytes, 3000 recorded"),
    (lambda p: (p / MARKER).unlink(), f"no {MARKER} (the save did not finish)"),
])
def test_incomplete_latest_falls_back_to_newest_complete(ckpt, caplog, damage, why):
    damage(ckpt.dir / "step-00000006")
    engine = FakeEngine()
    with caplog.at_level(logging.WARNING):
        state = ckpt.load(engine)
    assert state["step"] == 4 and engine.loaded == "step-00000004"
    assert f"skipped incomplete checkpoint step-00000006 ({why}); resuming from step-00000004" in caplog.text


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
    assert "\n" not in msg and msg.startswith(f"no complete checkpoint in {ckpt.dir}: step-00000006 (")
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
