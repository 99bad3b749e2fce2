"""What every engine offers: a collection of pages, one point per page, one named (multi)vector per stored budget.

A collection is created for one registered model version and the budgets it stores; `info` (model URI, version,
budgets, eval fingerprint, ...) travels with it. Pages are upserted with their vectors at every stored budget (float
values before storage: the engine stores them at each budget's precision), removed by document, and searched by a
cascade of stages: the first scores every page at its budget and keeps `limit`, each later stage re-scores the
previous stage's pages at its own budget. Scores are MaxSim as `pipeline.model.precision` computes them from the
stored codes (within the engine's stated tolerance).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import torch

from pipeline.model.budgets import Budget

MOD = 1 << 256  # content fingerprints add per-page digests modulo 2^256: order-free, updated per upsert/delete


@dataclass
class Page:
    """One page to store: its key (unique in the collection), document, page number, source shard, and its float
    vectors per stored budget ({budget: [n, budget.dim]})."""

    key: str
    doc: str
    page: int
    shard: str
    vectors: dict[Budget, torch.Tensor] = field(repr=False)

    def payload(self) -> dict:
        return {"key": self.key, "doc": self.doc, "page": self.page, "shard": self.shard}


@dataclass
class Hit:
    """One result: the page's key, its score at the last stage's budget, and its payload."""

    key: str
    score: float
    payload: dict


Stage = tuple[Budget, int]  # (budget, how many pages this stage keeps)


def check_stages(stages: list[Stage], stored: list[Budget]) -> None:
    """ValueError (one line) unless every stage's budget is stored and each stage keeps no more than the last."""
    missing = [str(b) for b, _ in stages if b not in stored]
    if missing:
        raise ValueError(f"budgets {', '.join(missing)} are not stored in this collection (it stores "
                         f"{', '.join(map(str, stored))}): add them to serve.budgets and re-index")
    limits = [n for _, n in stages]
    if not stages or any(n < 1 for n in limits) or any(a < b for a, b in zip(limits, limits[1:])):
        raise ValueError(f"a cascade keeps >= 1 page per stage, never more than the stage before: got {limits}")


def page_digest(key: str, version: int | None, stored: dict[str, bytes]) -> int:
    """A page's content digest: its key, the registry version that encoded it and the bytes stored per budget."""
    h = hashlib.sha256(f"{key}\0{version}".encode())
    for name in sorted(stored):
        h.update(name.encode() + b"\0" + stored[name])
    return int.from_bytes(h.digest(), "big")


class Engine(Protocol):
    """A collection of pages in some engine (see the module docstring)."""

    budgets: list[Budget]
    info: dict

    def upsert(self, pages: list[Page]) -> None: ...

    def delete_documents(self, docs: list[str]) -> int: ...

    def search(self, queries: list[dict[Budget, torch.Tensor]], stages: list[Stage]) -> list[list[Hit]]: ...

    def count(self) -> int: ...

    def verify(self) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...
