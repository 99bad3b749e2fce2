"""Serving's section of the config tree: which variant, the index, the HTTP server and its request limits."""

from __future__ import annotations

from pydantic import model_validator

from pipeline.configlib import FieldError, Port, PosFloat, PosInt, Section


class ServeConfig(Section):
    """Serving a registered variant: the pyfunc over HTTP, and an on-disk index with top-k search (pipeline/serve)."""

    alias: str = "balanced"
    """The registry alias to serve."""
    model_uri: str | None = None
    """Any pyfunc model URI; null: models:/<tracking.registered_model>@<alias>."""
    index_dir: str = "demo_out/index"
    """Where `serve index` writes and `serve search` reads the index."""
    shards: str | None = None
    """Pages to index; null: eval.shards, else data.shards."""
    split: str = "eval"
    """The manifest split to index."""
    batch_size: PosInt = 16
    """Pages encoded at once while indexing."""
    queries: list[str] = []
    """Query texts for `serve search`."""
    k: PosInt = 5
    """Results per query."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds (only this host can reach it by default)."""
    port: Port = 5001
    """Port of the HTTP server."""
    max_request_mb: PosFloat = 32.0
    """Largest request body the HTTP server reads, in MiB (larger: 413)."""
    max_rows: PosInt = 64
    """Most rows (queries + pages) in one request (more: 413)."""

    @model_validator(mode="after")
    def check(self):
        if not self.host:
            raise FieldError("host", "must not be empty")
        return self
