"""Logging set-up shared by every entry point: one format, and only rank 0 speaks at INFO."""

import logging
import sys

from pipeline.ranks import launched


class _RankFilter(logging.Filter):
    """Drop records below WARNING on ranks other than 0."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    if any(getattr(h, "_pipeline", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._pipeline = True  # type: ignore[attr-defined]
    rank = launched()[1]  # the launcher's rank (torchrun, deepspeed, Slurm, Open MPI), as the training reads it
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_RankFilter(rank))
    root.addHandler(handler)
    root.setLevel(level)
