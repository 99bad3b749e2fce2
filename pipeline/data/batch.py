"""The typed training batch and the collate that turns a RawBatch into model inputs with the model's processor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.data.stream import RawBatch


class Processor(Protocol):
    """What the loader needs from the model side (pipeline.model's processor satisfies it)."""

    def pages(self, images: list) -> Any: ...

    def queries(self, texts: list[str]) -> Any: ...


@dataclass
class Batch:
    """One rank's local batch of B (query, page) pairs; query i's positive page is page i.

    `queries` and `pages` are the processor's QueryInputs / PageInputs (each has `.slice`, `.to`, `len()`):
    queries hold token ids [B, Lq]; pages hold pixel patches and per-image grids [B, 3].
    """

    step: int  # the global step this batch belongs to
    keys: list[str]  # [B] sample keys `{doc_id}-p{page:05d}`
    queries: Any
    pages: Any
    bad_samples: int = 0  # unreadable samples replaced by the stream in this batch (data.skip_bad_samples)

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device) -> "Batch":
        return Batch(self.step, self.keys, self.queries.to(device), self.pages.to(device), self.bad_samples)


class Collate:
    """A picklable transform for the stream: RawBatch -> Batch, run inside loader workers."""

    def __init__(self, processor: Processor):
        self.processor = processor

    def __call__(self, raw: RawBatch) -> Batch:
        return Batch(raw.step, raw.keys, self.processor.queries(raw.queries), self.processor.pages(raw.images),
                     raw.bad_samples)
