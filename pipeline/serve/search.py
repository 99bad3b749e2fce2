"""Searching the live collection with a loaded variant: queries encoded once (every stage's exit from one forward),
a cascade run by the engine, results with their payload. Refuses a collection encoded by another registry version
than the model encoding the queries: vectors of different variants do not compare."""

from __future__ import annotations

import threading

from pipeline.model.budgets import Budget
from pipeline.serve.collections import Target, live_name, open_live
from pipeline.serve.engines.base import Engine, Hit
from pipeline.serve.index import cascade, query_vectors


class VersionMismatch(ValueError):
    """The live collection was encoded by another model version than the one searching it (one line)."""


def check_version(engine: Engine, model_uri: str, version: int | None) -> None:
    """VersionMismatch unless the collection was encoded by `model_uri` at `version`."""
    info = engine.info
    if info.get("model_uri") != model_uri or info.get("version") != version:
        raise VersionMismatch(f"{model_uri} (v{version}) is not what the live collection holds ({info.get('model_uri')}"
                              f" v{info.get('version')}): re-run `python -m pipeline.serve index`")


class Searcher:
    """A variant (`retriever`, registered as `model_uri` at `version`) searching a target's live collection; the
    collection is reopened when the live one changes (a re-index switched it). Safe to call from many threads."""

    def __init__(self, retriever, target: Target, serve, model_uri: str, version: int | None):
        self.retriever, self.target, self.serve = retriever, target, serve
        self.model_uri, self.version = model_uri, version
        self._lock = threading.Lock()
        self._engine, self._name = None, None

    def engine(self) -> Engine:
        """The live collection, checked against the model's version (reopened after a switch)."""
        with self._lock:
            name = live_name(self.target)
            if self._engine is None or name != self._name:
                engine = open_live(self.target)
                check_version(engine, self.model_uri, self.version)
                if self._engine is not None:
                    self._engine.close()
                self._engine, self._name = engine, name
            return self._engine

    def plan(self, k: int, stages: list[tuple[Budget, int]] | None = None) -> list[tuple[Budget, int]]:
        """The stages a search runs: `stages`, else serve.cascade, else the variant's own budget; the last keeps k."""
        return cascade(self.serve, self.retriever, k, stages)

    def search(self, texts: list[str], k: int, stages: list[tuple[Budget, int]] | None = None) -> list[list[Hit]]:
        """Top-k pages per query text, best first, through self.plan(k, stages)."""
        engine = self.engine()
        plan = self.plan(k, stages)
        return engine.search(query_vectors(self.retriever, texts, plan), plan)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
