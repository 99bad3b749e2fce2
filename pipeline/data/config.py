"""The training stream's section of the config tree (pipeline/data)."""

from __future__ import annotations

from pydantic import model_validator

from pipeline.configlib import FieldError, NonNegInt, PosInt, Section


class DataConfig(Section):
    """The training stream (pipeline/data)."""

    shards: str = "demo_out/shards"
    """The shard directory holding manifest.json."""
    split: str = "train"
    """The manifest split to train on."""
    global_batch: PosInt = 16
    """Query/page pairs per optimizer step, over all ranks (a multiple of the world size)."""
    num_workers: NonNegInt = 0
    """DataLoader worker processes per rank."""
    seed: int = 0
    """Seed of the sample order (a pure function of seed, epoch and world size)."""
    verify_checksums: bool = True
    """Read every shard once at start and check its sha256 against the manifest (sizes and sample counts are
    always checked; false reads only tar headers and JSON records at start)."""
    skip_bad_samples: bool = False
    """Skip a sample that cannot be read (no image, a JSON record or image that does not parse) and count it
    (MLflow metric bad_samples) instead of stopping with one line naming its shard and key."""

    @model_validator(mode="after")
    def check(self):
        if not self.split:
            raise FieldError("split", "must not be empty")
        return self
