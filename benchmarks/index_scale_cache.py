"""The index-scale benchmark's store of finished measurements, keyed on what was measured: a killed run, run again,
reuses every collection it had measured and continues with the next.

One JSON file per measurement under the run's work directory, named by the SHA-256 of its spec (engine, budgets,
pages, vectors, query plans, ...) written canonically; the spec is stored beside the value and compared on reading,
so a file that does not hold what its name promises (truncated, edited, another spec) is measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Cache:
    """Finished measurements under `directory`, one file per spec."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, spec: dict) -> Path:
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
        return self.directory / f"{digest}.json"

    def get(self, spec: dict):
        """The value stored for this spec, or None (none stored, or the file is not a whole one for this spec)."""
        path = self.path(spec)
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("index_scale: %s unreadable (%s): measuring again", path, e)
            return None
        if not isinstance(stored, dict) or stored.get("spec") != json.loads(json.dumps(spec)):
            log.warning("index_scale: %s holds another spec: measuring again", path)
            return None
        return stored.get("value")

    def put(self, spec: dict, value) -> None:
        """Store the value for this spec, written whole (temporary file, then renamed)."""
        path = self.path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"spec": spec, "value": value}))
        tmp.replace(path)
