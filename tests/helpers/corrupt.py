"""Ways a shard directory lies, made by the tests: manifests with hostile names, edited bytes, wrong counts."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from pipeline.layout.files import sha256_file


def edit_manifest(shard_dir: Path, index: int = 0, **fields) -> None:
    """Set fields of manifest entry `index` (e.g. name, samples), leaving everything else as written."""
    path = shard_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][index].update(fields)
    path.write_text(json.dumps(manifest, indent=1))


def change_query_letters(shard: Path) -> int:
    """Change one letter of every query in a shard in place (same size, the tar still parses); returns how many."""
    data = bytearray(shard.read_bytes())
    changed = 0
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        for m in tar:
            if m.name.endswith(".json"):
                rec = json.loads(tar.extractfile(m).read())
                for q in rec["queries"]:
                    needle = json.dumps(q).encode()
                    at = data.index(needle, m.offset_data, m.offset_data + m.size)
                    letter = data[at + 1]
                    data[at + 1] = letter + 1 if letter < ord("Z") else ord("A")
                    changed += 1
    shard.write_bytes(bytes(data))
    return changed


def flip_image_bytes(shard: Path, key: str, ext: str = "png", reseal: bool = False) -> None:
    """Overwrite the middle of one sample's image with garbage (same size). With `reseal` the manifest's size and
    sha256 are updated too, as if the render job itself had written the bad image."""
    data = bytearray(shard.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        m = tar.getmember(f"{key}.{ext}")
    start = m.offset_data + 16  # past the PNG signature and the IHDR header: the image data itself
    data[start : m.offset_data + m.size] = bytes(255 - b for b in data[start : m.offset_data + m.size])
    shard.write_bytes(bytes(data))
    if reseal:
        manifest = json.loads((shard.parent / "manifest.json").read_text())
        for e in manifest["shards"]:
            if e["name"] == shard.name:
                e.update(bytes=len(data), sha256=sha256_file(shard))
        (shard.parent / "manifest.json").write_text(json.dumps(manifest, indent=1))


def first_key(shard: Path) -> str:
    with tarfile.open(shard) as tar:
        return tar.next().name.split(".")[0]
