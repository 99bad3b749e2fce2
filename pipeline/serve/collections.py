"""Where a served alias's collections live, which one is live, and switching to a new one atomically.

- Embedded (Qdrant Edge, or the flat index): collections are directories `<index_dir>/collections/<name>/`; the live
  one is the symlink `<index_dir>/current`, replaced by a rename (atomic): a search finds the complete old
  collection or the complete new one, and a re-index killed part-way leaves the old one live. The previous
  collection is kept (a server that opened it keeps working until it reloads); older ones are removed.
- A Qdrant server or cluster (`serve.qdrant_url`): collections are `<alias name>-<id>`; the live one is the
  Qdrant collection alias `<alias name>` (default `<registered model>-<serve alias>`), moved in one
  alias-update call; the replaced collection is dropped. The API key is read from the environment variable
  `serve.qdrant_api_key_env`, never from the config.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.budgets import Budget
from pipeline.serve.engines.base import Engine

CURRENT, COLLECTIONS = "current", "collections"


class NoCollection(ValueError):
    """The target has no live collection yet."""


@dataclass(frozen=True)
class Target:
    """One deployment of a served alias: engine kind, local directory, server URL and alias name."""

    engine: str
    index_dir: Path
    url: str | None
    api_key_env: str
    alias: str

    @staticmethod
    def of(serve, registered_model: str) -> "Target":
        """The target a config's serve section names."""
        alias = serve.collection or f"{registered_model}-{serve.alias}"
        return Target(serve.engine, Path(serve.index_dir), serve.qdrant_url, serve.qdrant_api_key_env, alias)

    @property
    def server(self) -> bool:
        return self.engine == "qdrant" and self.url is not None

    def client(self):
        """A qdrant-client for the URL (one per process): http(s)://... a server or cluster; path:DIR
        qdrant-client's local mode (the same client code without a server, one process at a time)."""
        return _client(self.url, self.api_key_env)


@functools.lru_cache(maxsize=None)
def _client(url: str, api_key_env: str):
    from qdrant_client import QdrantClient

    client = (QdrantClient(path=url[len("path:"):]) if url.startswith("path:")
              else QdrantClient(url=url, api_key=os.environ.get(api_key_env) or None))
    atexit.register(client.close)  # before the interpreter tears down what close() imports
    return client


def _new_name(info: dict) -> str:
    return f"{info.get('registered_model') or 'model'}-v{info.get('version')}-{uuid.uuid4().hex[:8]}"


def create(target: Target, budgets: list[Budget], info: dict) -> tuple[Engine, str]:
    """A new, empty collection storing `budgets` (not live yet): (engine, its name)."""
    from pipeline.serve.engines.qdrant import QdrantEngine

    name = _new_name(info)
    meta = {"info": info, "budgets": [str(b) for b in budgets], "fingerprint": "0" * 64}
    if target.server:
        from pipeline.serve.engines.client import ClientBackend

        return QdrantEngine(ClientBackend.create(target.client(), f"{target.alias}-{name}", budgets, meta)), name
    directory = target.index_dir / COLLECTIONS / name
    if target.engine == "flat":
        from pipeline.serve.engines.flat import FlatEngine

        return FlatEngine.create(directory, budgets, info), name
    from pipeline.serve.engines.edge import EdgeBackend

    return QdrantEngine(EdgeBackend.create(directory, budgets, meta)), name


def publish(target: Target, name: str) -> None:
    """Make collection `name` the live one in one atomic step, then drop collections older than the previous."""
    if target.server:
        from qdrant_client import models as m

        client, full = target.client(), f"{target.alias}-{name}"
        old = [a.collection_name for a in client.get_aliases().aliases if a.alias_name == target.alias]
        ops = [m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=target.alias))] if old else []
        ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=full, alias_name=target.alias)))
        client.update_collection_aliases(change_aliases_operations=ops)
        for collection in old:
            if collection != full:
                client.delete_collection(collection)
        return
    current, tmp = target.index_dir / CURRENT, target.index_dir / f".{CURRENT}.{uuid.uuid4().hex[:8]}"
    previous = os.readlink(current) if current.is_symlink() else None
    os.symlink(f"{COLLECTIONS}/{name}", tmp)
    os.replace(tmp, current)  # atomic: readers see the old link or the new one
    keep = {name, Path(previous).name if previous else None}
    for old in (target.index_dir / COLLECTIONS).iterdir():
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def open_live(target: Target) -> Engine:
    """The live collection's engine; ValueError (one line) when there is none."""
    from pipeline.serve.engines.qdrant import QdrantEngine

    if target.server:
        from pipeline.serve.engines.client import ClientBackend

        client = target.client()
        if not client.collection_exists(target.alias):
            raise NoCollection(f"no Qdrant collection or alias {target.alias!r} on the server: run "
                               "`python -m pipeline.serve index`")
        return QdrantEngine(ClientBackend(client, target.alias))
    current = target.index_dir / CURRENT
    if not current.exists():
        raise NoCollection(f"{target.index_dir}: no index here: run `python -m pipeline.serve index`")
    if (current / "flat.safetensors").exists() or target.engine == "flat":
        from pipeline.serve.engines.flat import FlatEngine

        return FlatEngine.open(current.resolve())
    from pipeline.serve.engines.edge import EdgeBackend

    return QdrantEngine(EdgeBackend(current.resolve()))


def live_name(target: Target) -> str | None:
    """The live collection's name (to notice a switch), or None."""
    if target.server:
        aliases = target.client().get_aliases().aliases
        return next((a.collection_name for a in aliases if a.alias_name == target.alias), None)
    current = target.index_dir / CURRENT
    return os.readlink(current) if current.is_symlink() else None
