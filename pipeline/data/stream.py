"""The resumable training stream: sample order a pure function of (seed, epoch, world size), split by rank and worker.

Global batch `s` of the run is the slice `[b*G, (b+1)*G)` of epoch `e`'s permutation of the whole split, where
`e, b = divmod(s, batches_per_epoch)` and the permutation is seeded by `(seed, e)`. Rank `r` of `W` takes the `r`-th
`G/W` of it; loader worker `w` of `K` builds local batches `s` with `s % K == w`, and the DataLoader hands them out
in step order. The stream position is therefore just the next step: a checkpoint records it (with the data's
fingerprint) and a resumed run reads exactly the batches an uninterrupted run would have read. The global batches
do not even depend on the world size, only their split across ranks does.

WebDataset 1.0.2 reads tars sequentially only; a whole-split permutation needs random access, so the shards are
scanned once at start by the shard reader (pipeline/data/reader.py: every byte hashed and checked against the
manifest's sha256 with `data.verify_checksums`, sample counts always checked) and images are read by offset.
A sample that does not decode stops training with one line naming shard and key; with `data.skip_bad_samples`
it is replaced by the next readable sample in shard order (deterministic, so resuming stays exact) and counted
each time it comes up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from pipeline.data.reader import decode_sample_image, queries_of, read_member, scan_shard
from pipeline.layout.shards import ShardError, ShardInfo, shard_list_fingerprint

log = logging.getLogger(__name__)
# What a checkpointed stream position depends on, and the setting that changes it.
RESUME_SETTINGS = {"global_batch": "data.global_batch", "seed": "data.seed",
                   "fingerprint": "the data (data.shards/data.split: shard names, sizes, sha256)",
                   "samples": "the number of trainable samples (data.skip_bad_samples)"}


@dataclass(frozen=True)
class SampleRef:
    """Where one training sample's bytes lie: its image member and its queries (read at index time)."""

    key: str
    shard: int
    offset: int
    size: int
    queries: tuple[str, ...]


@dataclass
class RawBatch:
    """One rank's local batch before processing: decoded pages and the query picked for each."""

    step: int
    keys: list[str]
    images: list[Image.Image]
    queries: list[str]
    bad_samples: int = 0  # unreadable samples replaced in this batch (data.skip_bad_samples)


def index_shards(shards: list[ShardInfo], verify: bool = True, skip_bad: bool = False
                 ) -> tuple[list[SampleRef], int]:
    """(refs, bad): every sample of `shards` that has at least one query (pages without queries cannot be trained
    on), after the reader checked each shard against the manifest; `bad` counts samples skipped as unreadable
    (only with `skip_bad`; otherwise the first one raises ShardError naming shard and key)."""
    refs: list[SampleRef] = []
    bad: list[ShardError] = []
    dropped = 0
    for si, shard in enumerate(shards):
        for s in scan_shard(shard, verify=verify, on_bad=bad.append if skip_bad else None):
            queries = tuple(queries_of(s.meta))
            if not queries:
                dropped += 1
                continue
            refs.append(SampleRef(s.key, si, s.offset, s.size, queries))
    if dropped:
        log.warning("%d samples without a query are left out of the stream", dropped)
    for e in bad[:5]:
        log.warning("skipped bad sample: %s", e)
    if bad:
        log.warning("%d bad samples skipped (data.skip_bad_samples)", len(bad))
    return refs, len(bad)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the `n` samples in `epoch`: [n] int64, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def local_indices(step: int, n: int, global_batch: int, world_size: int, rank: int, seed: int) -> list[int]:
    """Sample indices of rank `rank`'s share of global batch `step`: [global_batch // world_size]."""
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not a multiple of the world size {world_size}")
    per_epoch = n // global_batch
    if per_epoch == 0:
        raise ValueError(f"the split has {n} trainable samples, fewer than one global batch ({global_batch})")
    epoch, b = divmod(step, per_epoch)
    local = global_batch // world_size
    start = b * global_batch + rank * local
    return epoch_permutation(n, seed, epoch)[start : start + local].tolist()


def pick_query(ref: SampleRef, index: int, seed: int, step: int, per_epoch: int) -> str:
    """One of the page's queries, chosen by (seed, epoch, sample): every epoch may use a different one."""
    if len(ref.queries) == 1:
        return ref.queries[0]
    pick = np.random.default_rng([seed, step // per_epoch, index, 1]).integers(len(ref.queries))
    return ref.queries[int(pick)]


class TrainStream(torch.utils.data.IterableDataset):
    """Yields this rank's local batches for steps `start_step, start_step+1, ...` (forever, epoch after epoch).

    `transform(RawBatch) -> Batch-like` runs in the loader worker (e.g. the model's processor via `collate`).
    """

    def __init__(
        self,
        shards: list[ShardInfo],
        global_batch: int,
        world_size: int,
        rank: int,
        seed: int,
        transform: Callable[[RawBatch], object] | None = None,
        refs: list[SampleRef] | None = None,
        verify: bool = True,
        skip_bad: bool = False,
    ):
        self.paths = [s.path for s in shards]
        self.fingerprint = shard_list_fingerprint(shards)
        self.skip_bad = skip_bad
        self.bad_at_index = 0  # samples skipped while indexing (skip_bad only)
        if refs is None:
            refs, self.bad_at_index = index_shards(shards, verify=verify, skip_bad=skip_bad)
        self.refs = refs
        self.global_batch, self.world_size, self.rank, self.seed = global_batch, world_size, rank, seed
        self.transform = transform
        self.start_step = 0
        self._files: dict[int, object] = {}
        self.batches_per_epoch = len(self.refs) // global_batch
        local_indices(0, len(self.refs), global_batch, world_size, rank, seed)  # fail early on bad sizes

    def state_dict(self) -> dict:
        """The stream position to store in a checkpoint (plain JSON types)."""
        return {"step": self.start_step, "seed": self.seed, "global_batch": self.global_batch,
                "samples": len(self.refs), "fingerprint": self.fingerprint}

    def resume_problem(self, state: dict) -> str | None:
        """Why this stream cannot continue from the checkpointed position `state` (other data, seed or global
        batch: the batches would not be the ones the run was seeing), naming the setting; None when it can."""
        now = self.state_dict()
        for key, setting in RESUME_SETTINGS.items():
            if state.get(key) != now[key]:
                return f"{setting} was {state.get(key)!r} at the checkpoint, now {now[key]!r}"
        return None

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's position; refuses different data, seed or global batch."""
        why = self.resume_problem(state)
        if why:
            raise ValueError(f"cannot resume the stream: {why}")
        self.start_step = int(state["step"])

    def _read(self, ref: SampleRef) -> Image.Image:
        f = self._files.get(ref.shard)
        if f is None:
            f = self._files[ref.shard] = open(self.paths[ref.shard], "rb")
        return decode_sample_image(read_member(f, ref), self.paths[ref.shard], ref.key)

    def _read_or_next(self, i: int) -> tuple[SampleRef, Image.Image, int]:
        """(ref, image, bad): sample i, or with skip_bad the first readable sample after it (wrapping around)."""
        for bad in range(len(self.refs)):
            ref = self.refs[(i + bad) % len(self.refs)]
            try:
                return ref, self._read(ref), bad
            except ShardError as e:
                if not self.skip_bad:
                    raise
                log.warning("skipped bad sample: %s", e)
        raise ShardError(f"{self.paths[0].parent}: no sample of the split decodes")

    def raw_batch(self, step: int) -> RawBatch:
        """This rank's local batch of global step `step`."""
        idx = local_indices(step, len(self.refs), self.global_batch, self.world_size, self.rank, self.seed)
        read = [self._read_or_next(i) for i in idx]
        refs = [r for r, _, _ in read]
        queries = [pick_query(r, i, self.seed, step, self.batches_per_epoch) for r, i in zip(refs, idx)]
        return RawBatch(step, [r.key for r in refs], [img for _, img, _ in read], queries,
                        sum(bad for _, _, bad in read))

    def __iter__(self) -> Iterator[object]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        step = self.start_step + worker
        while True:
            raw = self.raw_batch(step)
            yield self.transform(raw) if self.transform else raw
            step += workers


def make_loader(stream: TrainStream, num_workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over `stream` that keeps step order (workers take steps round-robin)."""
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )
