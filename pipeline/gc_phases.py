"""Python's cyclic garbage collector around a process's set-up: rare while the libraries, the model and the engine
load, then whatever set-up made is frozen, so the collections during the work that follows walk only what that work
makes. Python collects its youngest objects every 700 allocations net and, as the heap grows by a quarter, walks
every object the process holds: torch, transformers, DeepSpeed and MLflow leave millions, and on a short CPU training
the collector took a fifth of the process's CPU time (benchmarks/gc_setup.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 10_000  # allocations between collections of the youngest generation during set-up (Python: 700)


@contextmanager
def setting_up() -> Iterator[None]:
    """Collections rarer inside (every YOUNG allocations: the set-up's reference cycles still go, a few thousand
    objects later); on the way out the thresholds as they were, one full collection and every object left frozen
    (gc.freeze: out of all later collections, for the process's life)."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.collect()
        gc.freeze()
