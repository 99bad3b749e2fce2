"""Serving's section of the config tree: which variant, where its pages are indexed (Qdrant or the flat index),
the budgets stored and the cascade searched, the HTTP server and its request limits."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from pipeline.configlib import FieldError, Port, PosFloat, PosInt, Section
from pipeline.model.config import BudgetField, StageField


class ServeConfig(Section):
    """Serving a registered variant: the pyfunc over HTTP, and an on-disk index with top-k search (pipeline/serve)."""

    alias: str = "balanced"
    """The registry alias to serve."""
    model_uri: str | None = None
    """Any pyfunc model URI; null: models:/<tracking.registered_model>@<alias>."""
    engine: Literal["qdrant", "flat"] = "qdrant"
    """Where pages are indexed: qdrant (Qdrant Edge in this process, or the server at qdrant_url) or flat (the exact
    brute-force index, the oracle Qdrant is tested against)."""
    qdrant_url: str | None = None
    """null: an embedded Qdrant Edge shard under index_dir; http(s)://host:port: a Qdrant server or cluster;
    path:DIR: qdrant-client's local mode (the server code path without a server, one process at a time)."""
    qdrant_api_key_env: str = "QDRANT_API_KEY"
    """The environment variable holding the Qdrant server's API key (read at start, never stored or logged)."""
    collection: str | None = None
    """Name of the live collection's alias on a Qdrant server; null: <tracking.registered_model>-<alias>."""
    index_dir: str = "demo_out/index"
    """Embedded engines: where collections live (<index_dir>/collections/, the live one <index_dir>/current)."""
    budgets: list[BudgetField] = []
    """Budgets stored side by side, one named (multi)vector each, all cut from one encoding of the page; each must
    be reachable from the served variant (its exits and width). Empty: the cascade's budgets and the variant's own."""
    cascade: list[StageField] = []
    """Search stages [[budget, limit], ..., [budget, k]]: the first finds `limit` candidates at a cheap budget, each
    later stage re-ranks the previous one's at a larger budget; the last keeps the request's k. Empty: one stage
    at the variant's own budget."""
    shards: str | None = None
    """Pages to index; null: eval.shards, else data.shards."""
    split: str = "eval"
    """The manifest split to index; all: every split."""
    docs: list[str] = []
    """Documents (doc ids) that `serve delete` removes."""
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
    max_image_pixels: PosInt = 1_000_000
    """Largest page image a request may send, in pixels (width x height, read from the header before decoding;
    larger: 413). The render job's render.max_pixels default."""

    @model_validator(mode="after")
    def check(self):
        if not self.host:
            raise FieldError("host", "must not be empty")
        limits = [n for _, n in self.cascade]
        if any(a < b for a, b in zip(limits, limits[1:])):
            raise FieldError("cascade", f"each stage keeps no more pages than the one before, got limits {limits}")
        if self.qdrant_url is not None and not self.qdrant_url.startswith(("http://", "https://", "path:")):
            raise FieldError("qdrant_url", f"{self.qdrant_url!r} is not http(s)://host:port or path:DIR")
        return self
