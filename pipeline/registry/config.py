"""Promotion's section of the config tree: the quality gate's tolerance and what to promote."""

from __future__ import annotations

from pipeline.configlib import NonNegFloat, PosFloat, PosInt, Section


class PromoteConfig(Section):
    """Gated alias promotion (pipeline/promote.py)."""

    tolerance: NonNegFloat = 0.005
    """A candidate within this nDCG@5 below the holder still promotes (a tie)."""
    dry_run: bool = False
    """Say what would happen; change nothing."""
    alias: str | None = None
    """The alias to move, e.g. full, balanced, tiny."""
    version: PosInt | None = None
    """The candidate version (or give max_bytes_per_page)."""
    max_bytes_per_page: PosFloat | None = None
    """Pick the best version whose bytes/page is at most this."""
    retries: PosInt = 10
    """Attempts when concurrent promotions of the same alias keep winning the race first."""
