"""Resumable checkpoints behind two calls, `save()` and `load()`: DeepSpeed engine (weights, optimizer, schedule)
plus the trainer state (step, stream position, counters) and every rank's random state.

Layout under `<output_dir>/checkpoints/`: `step-00000050/` (DeepSpeed's files + `trainer_state.json` +
`rng-rank{r}.json`) and `latest` (the newest complete tag). A checkpoint is written under `tmp-step-...` and
renamed when every rank has finished, so a directory named `step-*` is whole; the last `keep` are kept. DeepSpeed's
files are torch pickles: they are loaded only from this run's own checkpoint directory, never from a given path.
The directory must be on a file system every node sees (as DeepSpeed's ZeRO checkpoints require).
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

from pipeline.train import dist

log = logging.getLogger(__name__)


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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data))


class Checkpointer:
    """Save and load the run's checkpoints in `<output_dir>/checkpoints`."""

    def __init__(self, output_dir: str | Path, keep: int = 2):
        self.dir = Path(output_dir) / "checkpoints"
        self.keep = max(1, keep)

    def latest(self) -> Path | None:
        """The newest complete checkpoint directory, or None."""
        marker = self.dir / "latest"
        if not marker.is_file():
            return None
        path = self.dir / marker.read_text().strip()
        return path if (path / "trainer_state.json").is_file() else None

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
            shutil.rmtree(self.dir / tag, ignore_errors=True)
            os.replace(tmp, self.dir / tag)
            _write_text(self.dir / "latest", tag)  # plain text, as DeepSpeed's own `latest` file
            self._prune()
            log.info("checkpoint %s", self.dir / tag)
        dist.barrier()
        return self.dir / tag

    def _prune(self) -> None:
        tags = sorted(p for p in self.dir.glob("step-*") if p.is_dir())
        for old in tags[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.dir.glob("tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def load(self, engine: Any) -> dict | None:
        """Restore the newest checkpoint into `engine` and this rank's RNG; returns its trainer state or None."""
        path = self.latest()
        if path is None:
            return None
        engine.load_checkpoint(str(self.dir), tag=path.name, load_optimizer_states=True,
                               load_lr_scheduler_states=True)
        state = json.loads((path / "trainer_state.json").read_text())
        rng = path / f"rng-rank{dist.rank()}.json"
        if state["world_size"] == dist.world_size() and rng.is_file():
            set_rng_state(json.loads(rng.read_text()))
        else:
            log.warning("resuming on %d ranks from a %d-rank checkpoint: random state not restored",
                        dist.world_size(), state["world_size"])
        log.info("resumed from %s (step %d)", path, state["step"])
        return state
