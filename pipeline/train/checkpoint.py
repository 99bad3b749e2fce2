"""Resumable checkpoints behind two calls, `save()` and `load()`: DeepSpeed engine (weights, optimizer, schedule)
plus the trainer state (step, stream position, counters) and every rank's random state.

Layout under `<output_dir>/checkpoints/`: `step-00000050/` (DeepSpeed's files, `trainer_state.json`,
`rng-rank{r}.json` and, written last, `complete.json`: the size and sha256 of every other file, hashed at save) and
`latest` (the newest tag). A checkpoint is written under `tmp-step-...` and renamed once `complete.json` is in, so
only a complete checkpoint carries the marker. A checkpoint is trusted only when its marker is present and every
recorded file has its recorded size and, before a resume loads it, its recorded sha256 (the ranks of a job hash
a share of the files each): `latest` first, else the newest one that verifies (with a warning naming what was
skipped and why). When checkpoints exist but none verifies, `find()` raises CheckpointError rather than restart
from step 0. Pruning keeps the newest `keep` complete checkpoints (never one found corrupt) and never the only one.
A save that runs out of disk space raises DiskFull naming the directory; the checkpoints before it are untouched.
DeepSpeed's files are torch pickles: they are loaded only from this run's own checkpoint directory, never from a
given path. The directory must be on a file system every node sees (as DeepSpeed's ZeRO checkpoints require).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.layout.files import atomic_write, sha256_file
from pipeline.layout.run import RunPaths
from pipeline.train import dist

log = logging.getLogger(__name__)
MARKER = "complete.json"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be trusted, or the run cannot resume from one (one line naming each and why)."""


class DiskFull(CheckpointError):
    """A checkpoint could not be written for lack of space (one line naming the directory)."""


def rng_state() -> dict:
    """This process's random state (Python, NumPy, torch CPU and CUDA) as plain JSON types."""
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *[v for v in np_state[2:]]],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data))


def checkpoint_files(directory: Path) -> list[str]:
    """Relative paths of every file under `directory` except the marker, sorted."""
    return [str(p.relative_to(directory)) for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MARKER]


def hash_files(directory: Path, names: list[str]) -> dict[str, dict]:
    """{name: {"bytes", "sha256"}} of the named files under `directory` (what complete.json records)."""
    return {n: {"bytes": (directory / n).stat().st_size, "sha256": sha256_file(directory / n)} for n in names}


def _records(path: Path) -> dict[str, dict] | str:
    """complete.json's file records ({name: {"bytes", "sha256"}}; a marker written before content hashes gives
    {"bytes"} only), or why there are none."""
    try:
        recorded = json.loads((path / MARKER).read_text())["files"]
        return {name: rec if isinstance(rec, dict) else {"bytes": int(rec)} for name, rec in recorded.items()}
    except FileNotFoundError:
        return f"no {MARKER} (the save did not finish)"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"unreadable {MARKER}"


def problem(path: Path, content: bool = False, share: tuple[int, int] = (0, 1)) -> str | None:
    """Why checkpoint directory `path` cannot be trusted, or None. Always checked: the marker and every recorded
    file's size; with `content` also the recorded sha256 of every `share[1]`-th file from `share[0]` (one rank's
    share, so the ranks of a job hash a checkpoint once between them)."""
    if not path.is_dir():
        return "missing"
    records = _records(path)
    if isinstance(records, str):
        return records
    for name, rec in records.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != rec["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, {rec['bytes']} recorded"
    if content:
        for name in sorted(records)[share[0]::share[1]]:
            if "sha256" in records[name] and sha256_file(path / name) != records[name]["sha256"]:
                return f"{name} does not match the sha256 recorded at save (same size, other bytes)"
    return None


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


class Checkpointer:
    """Save and load the run's checkpoints in `<output_dir>/checkpoints`."""

    def __init__(self, output_dir: str | Path, keep: int = 2):
        self.dir = RunPaths(Path(output_dir)).checkpoints
        self.keep = max(1, keep)
        self.corrupt: set[str] = set()  # tags whose bytes failed their sha256 in find(): never kept over good ones

    def tags(self) -> list[Path]:
        """Every `step-*` directory, newest first."""
        return sorted((p for p in self.dir.glob("step-*") if p.is_dir()), key=_step_of, reverse=True)

    def complete(self) -> list[Path]:
        """The complete checkpoints (marker and sizes; not hashed again), newest first, less any found corrupt."""
        return [p for p in self.tags() if p.name not in self.corrupt and problem(p) is None]

    def find(self) -> Path | None:
        """The checkpoint to resume from: `latest` when it verifies (sizes and sha256), else the newest one that
        does (warning what was skipped and why); None when there are no checkpoints. Raises CheckpointError when
        some exist but none verifies. Collective: every rank hashes its share of the files, all get one answer."""
        marker = self.dir / "latest"
        name = marker.read_text().strip() if marker.is_file() else ""
        named = self.dir / name if name else None
        skipped = []
        order = ([named] if named is not None else []) + [p for p in self.tags() if p != named]
        for path in order:
            mine = problem(path, content=True, share=(dist.rank(), dist.world_size()))
            why = next((w for w in dist.gather_objects(mine) if w), None)
            if why is None:
                if skipped:
                    log.warning("skipped checkpoint%s %s; resuming from %s", "s" * (len(skipped) > 1),
                                "; ".join(skipped), path.name)
                return path
            if "sha256" in why:
                self.corrupt.add(path.name)
            skipped.append(f"{path.name} ({why})")
        if skipped:
            raise CheckpointError(f"no complete and intact checkpoint in {self.dir}: {'; '.join(skipped)}. Refusing "
                                  "to restart from step 0: move the directory away to start over")
        return None

    def trainer_state(self, path: Path) -> dict:
        """The trainer state saved in checkpoint `path` (step, stream position, world size), read without loading."""
        return json.loads((path / "trainer_state.json").read_text())

    def save(self, engine: Any, step: int, trainer_state: dict) -> Path:
        """Write a checkpoint after `step` completed steps (collective: every rank calls it). DiskFull (and the
        unfinished checkpoint removed) when the disk fills; the earlier checkpoints stay as they were."""
        tag = f"step-{step:08d}"
        tmp = self.dir / f"tmp-{tag}"
        if dist.is_rank0():
            shutil.rmtree(tmp, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        began = time.perf_counter()
        try:
            engine.save_checkpoint(str(self.dir), tag=tmp.name, save_latest=False)
            _write_json(tmp / f"rng-rank{dist.rank()}.json", rng_state())
            if dist.is_rank0():
                _write_json(tmp / "trainer_state.json", {**trainer_state, "step": step,
                                                         "world_size": dist.world_size()})
        except (OSError, RuntimeError) as e:
            raise self._save_failed(e, tmp) from e
        dist.barrier()
        written = time.perf_counter()
        names = dist.gather_objects(checkpoint_files(tmp) if dist.is_rank0() else None)[0]
        shares = dist.gather_objects((hash_files(tmp, names[dist.rank()::dist.world_size()]),
                                      time.perf_counter() - written))
        if dist.is_rank0():
            records = {k: v for files, _ in shares for k, v in files.items()}
            _write_json(tmp / MARKER, {"step": step, "files": records})  # last: the checkpoint is whole
            shutil.rmtree(self.dir / tag, ignore_errors=True)
            os.replace(tmp, self.dir / tag)
            self.corrupt.discard(tag)
            atomic_write(self.dir / "latest", tag)  # plain text, as DeepSpeed's own `latest` file
            self._prune()
            size = sum(r["bytes"] for r in records.values())
            log.info("checkpoint %s: %.1f MB written in %.2f s, sha256 in %.2f s", self.dir / tag, size / 1e6,
                     written - began, max(seconds for _, seconds in shares))
        dist.barrier()
        return self.dir / tag

    def _save_failed(self, error: BaseException, tmp: Path) -> BaseException:
        """DiskFull when `error` came from a full disk (ENOSPC, or torch's writer failing with under 1 MiB left:
        it names no errno), else `error`; the unfinished checkpoint is removed either way."""
        free = shutil.disk_usage(self.dir).free
        shutil.rmtree(tmp, ignore_errors=True)
        if getattr(error, "errno", None) != errno.ENOSPC and free >= 2**20:
            return error
        good = self.complete()
        kept = f"the last complete checkpoint {good[0].name} is intact" if good else "no earlier checkpoint exists"
        return DiskFull(f"no space left on the device of {self.dir} while writing checkpoint {tmp.name[4:]}: {kept}; "
                        "free space and rerun the same command to resume")

    def _prune(self) -> None:
        """Keep the newest `keep` complete checkpoints; drop older ones, incomplete leftovers and any found corrupt
        (a corrupt one newer than the newest good one stays until a save replaces its tag)."""
        complete = self.complete()
        if not complete:  # never reached after a save, but never delete the last good state either
            return
        newest = _step_of(complete[0])
        for path in self.tags():
            if (path in complete and path not in complete[: self.keep]) or (
                    path not in complete and _step_of(path) < newest):
                shutil.rmtree(path, ignore_errors=True)
        for stale in self.dir.glob("tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def load(self, engine: Any, path: Path | None = None) -> dict | None:
        """Restore checkpoint `path` (default: `find()`) into `engine` and this rank's RNG; returns its trainer
        state, or None when there is nothing to resume."""
        path = path or self.find()
        if path is None:
            return None
        try:
            engine.load_checkpoint(str(self.dir), tag=path.name, load_optimizer_states=True,
                                   load_lr_scheduler_states=True)
        except Exception as e:  # sizes matched but the content does not load: name it, do not go on
            first = (str(e).strip().splitlines() or [""])[0]
            raise CheckpointError(f"checkpoint {path} does not load ({type(e).__name__}: {first})") from e
        state = json.loads((path / "trainer_state.json").read_text())
        rng = path / f"rng-rank{dist.rank()}.json"
        if state["world_size"] == dist.world_size() and rng.is_file():
            set_rng_state(json.loads(rng.read_text()))
        else:
            log.warning("resuming on %d ranks from a %d-rank checkpoint: random state not restored",
                        dist.world_size(), state["world_size"])
        log.info("resumed from %s (step %d)", path, state["step"])
        return state
