"""Python's cyclic garbage collector around a process's set-up: paused while the libraries, the model and the engine
load, then whatever set-up made is frozen, so the collections during the work that follows walk only what that work
makes. Each full collection walks every object the process holds: torch, transformers, DeepSpeed and MLflow leave
millions, and on a short CPU training the collector took a fifth of the process's time (measured in
tests/test_gc_phases.py's docstring)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def setting_up() -> Iterator[None]:
    """The collector off inside; on the way out one full collection (the set-up's own garbage goes), every object
    left frozen (gc.freeze: out of all later collections, for the process's life) and the collector as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        if was_enabled:
            gc.enable()
