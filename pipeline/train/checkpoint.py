"""Resumable checkpoints behind two calls, `save()` and `load()`: DeepSpeed engine (weights, optimizer, schedule)
plus the trainer state (step, stream position, counters) and every rank's random state.

Layout under `<output_dir>/checkpoints/`: `step-00000050/` (DeepSpeed's files, `trainer_state.json`,
`rng-rank{r}.json` and, written last, `complete.json`: the size of every other file) and `latest` (the newest tag).
A checkpoint is written under `tmp-step-...` and renamed once `complete.json` is in, so only a complete checkpoint
carries the marker. A checkpoint is trusted only when its marker is present and every recorded file has its
recorded size: `latest` first, else the newest complete one (with a warning naming what was skipped). When
checkpoints exist but none is complete, `find()` raises CheckpointError rather than restart from step 0. Pruning
keeps the newest `keep` complete checkpoints and never the only one. DeepSpeed's files are torch pickles: they are
loaded only from this run's own checkpoint directory, never from a given path. The directory must be on a file
system every node sees (as DeepSpeed's ZeRO checkpoints require).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.layout.files import atomic_write
from pipeline.layout.run import RunPaths
from pipeline.train import dist

log = logging.getLogger(__name__)
MARKER = "complete.json"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be trusted (the message names each and why)."""


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


def file_sizes(directory: Path) -> dict[str, int]:
    """{relative path: bytes} of every file under `directory` except the marker."""
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MARKER}


def problem(path: Path) -> str | None:
    """Why checkpoint directory `path` cannot be trusted, or None when it is complete."""
    if not path.is_dir():
        return "missing"
    try:
        recorded = json.loads((path / MARKER).read_text())["files"]
    except FileNotFoundError:
        return f"no {MARKER} (the save did not finish)"
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MARKER}"
    for name, size in recorded.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} recorded"
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

    def tags(self) -> list[Path]:
        """Every `step-*` directory, newest first."""
        return sorted((p for p in self.dir.glob("step-*") if p.is_dir()), key=_step_of, reverse=True)

    def complete(self) -> list[Path]:
        """The complete checkpoints, newest first."""
        return [p for p in self.tags() if problem(p) is None]

    def find(self) -> Path | None:
        """The checkpoint to resume from: `latest` when complete, else the newest complete one (warning what was
        skipped); None when there are no checkpoints. Raises CheckpointError when some exist but none is complete."""
        marker = self.dir / "latest"
        name = marker.read_text().strip() if marker.is_file() else ""
        named = self.dir / name if name else None
        skipped = []
        order = ([named] if named is not None else []) + [p for p in self.tags() if p != named]
        for path in order:
            why = problem(path)
            if why is None:
                if skipped:
                    log.warning("skipped incomplete checkpoint%s %s; resuming from %s", "s" * (len(skipped) > 1),
                                "; ".join(skipped), path.name)
                return path
            skipped.append(f"{path.name} ({why})")
        if skipped:
            raise CheckpointError(f"no complete checkpoint in {self.dir}: {'; '.join(skipped)}. Refusing to restart "
                                  "from step 0: move the directory away to start over")
        return None

    def save(self, engine: Any, step: int, trainer_state: dict) -> Path:
        """Write a checkpoint after `step` completed steps (collective: every rank calls it)."""
        tag = f"step-{step:08d}"
        tmp = self.dir / f"tmp-{tag}"
        if dist.is_rank0():
            shutil.rmtree(tmp, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        engine.save_checkpoint(str(self.dir), tag=tmp.name, save_latest=False)
        _write_json(tmp / f"rng-rank{dist.rank()}.json", rng_state())
        dist.barrier()
        if dist.is_rank0():
            _write_json(tmp / "trainer_state.json", {**trainer_state, "step": step, "world_size": dist.world_size()})
            _write_json(tmp / MARKER, {"step": step, "files": file_sizes(tmp)})  # last: the checkpoint is whole
            shutil.rmtree(self.dir / tag, ignore_errors=True)
            os.replace(tmp, self.dir / tag)
            atomic_write(self.dir / "latest", tag)  # plain text, as DeepSpeed's own `latest` file
            self._prune()
            log.info("checkpoint %s", self.dir / tag)
        dist.barrier()
        return self.dir / tag

    def _prune(self) -> None:
        """Keep the newest `keep` complete checkpoints; drop older ones and incomplete leftovers."""
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
