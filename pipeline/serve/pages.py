"""Pages to index: every sample of a render-job shard directory (one split or all), read through the one shard reader
(size, sha256 and sample count verified before a byte is used), with what a search result shows of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from pipeline.data.reader import decode_sample_image, read_shard
from pipeline.layout.shards import ManifestError, ShardInfo, check_size, read_manifest, split_shards


@dataclass(frozen=True)
class ShardPage:
    """One page of a shard directory: its sample key, document id, page number, shard file and image."""

    key: str
    doc: str
    page: int
    shard: str
    image: Image.Image


def shards_of(shard_dir: str | Path, split: str) -> list[ShardInfo]:
    """The checked shard entries of `split` ("all": every split), in manifest order."""
    if split != "all":
        return split_shards(shard_dir, split)
    _, infos = read_manifest(shard_dir)
    if not infos:
        raise ManifestError(f"{Path(shard_dir)}: the manifest lists no shards")
    for s in infos:
        check_size(s)
    return infos


def read_pages(shards: list[ShardInfo]) -> Iterator[ShardPage]:
    """Every page of `shards`, each shard verified before its first page is yielded."""
    for shard in shards:
        for sample in read_shard(shard):
            meta = sample.meta
            yield ShardPage(sample.key, str(meta.get("doc_id", sample.key)), int(meta.get("page", 0)),
                            shard.path.name, decode_sample_image(sample.image, shard.path, sample.key))
