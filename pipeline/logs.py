"""Logging set-up shared by every entry point: one format, and only rank 0 speaks at INFO."""

import logging
import os
import sys


class _RankFilter(logging.Filter):
    """Drop records below WARNING on ranks other than 0 (rank read from the launcher's environment)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
        return rank == 0 or record.levelno >= logging.WARNING


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    if any(getattr(h, "_pipeline", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._pipeline = True  # type: ignore[attr-defined]
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_RankFilter())
    root.addHandler(handler)
    root.setLevel(level)
