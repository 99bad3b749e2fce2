"""The render job's shard plan: split by document, page -> shard plan, rejects, keeping shards of an earlier run.

The shard format itself is owned by pipeline/layout/ (names, manifest, verification: shards.py; the tar layout:
tars.py); this module plans and writes through it. Everything here is deterministic: the same documents and
settings give the same plan, the same tar bytes and the same manifest, so a re-run can keep every shard whose
checksum still matches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.sources import Doc, Reject
from pipeline.layout.files import atomic_write, sha256_file
from pipeline.layout.shards import (MANIFEST, PARTIAL, REJECTS, SPLITS, ManifestError, build_manifest,  # noqa: F401
                                    json_bytes, sample_key, shard_name, verify_dir)


@dataclass
class ShardPlan:
    name: str  # {split}-{index:06d}.tar
    split: str
    jobs: list[dict] = field(default_factory=list)  # page jobs (see data_prep.pages), in sample order
    plan: str = ""  # sha256 of the settings and the jobs: a kept shard must match it


def assign_splits(doc_ids: list[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """doc_id -> split. Documents are ordered by sha256(seed:doc_id); the first round(n * eval_fraction)
    are eval (at least one of each split when 0 < eval_fraction < 1 and n >= 2). Pages never straddle."""
    order = sorted(doc_ids, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
    n_eval = round(len(order) * eval_fraction)
    if 0 < eval_fraction < 1 and len(order) >= 2:
        n_eval = min(max(n_eval, 1), len(order) - 1)
    return {d: ("eval" if i < n_eval else "train") for i, d in enumerate(order)}


_TRAIN_NAMES = {"train", "training"}
_EVAL_NAMES = {"eval", "evaluation", "test", "validation", "val", "dev"}


def split_from_path(source: str) -> str | None:
    """train/eval named by the source's folders (nearest first) or by a HF-style `train-00000-of-00001.parquet`."""
    path = Path(source.split("#")[0])
    names = [part.lower() for part in reversed(path.parent.parts)]
    if path.suffix.lower() == ".parquet":
        names.insert(0, path.stem.lower().replace("_", "-").split("-")[0])
    for name in names:
        if name in _TRAIN_NAMES:
            return "train"
        if name in _EVAL_NAMES:
            return "eval"
    return None


def split_documents(docs: list[Doc], settings: dict) -> dict[str, str]:
    """doc_id -> split: by path (settings["split_by"] == "path") where a path names one, else seeded by document."""
    fixed = {}
    if settings.get("split_by", "hash") == "path":
        fixed = {d.doc_id: s for d in docs if (s := split_from_path(d.source)) is not None}
    elif settings.get("split_by", "hash") != "hash":
        raise ValueError(f"render.split_by must be hash or path, not {settings['split_by']!r}")
    rest = [d.doc_id for d in docs if d.doc_id not in fixed]
    return fixed | assign_splits(rest, settings["eval_fraction"], settings["split_seed"])


def plan_shards(docs: list[Doc], queries: dict[tuple[str, int], list[str]], settings: dict) -> list[ShardPlan]:
    """Cut each split's pages into shards of settings["shard_size"] samples.

    Documents are taken in their seeded order (so shards mix documents), pages in page order.
    """
    splits = split_documents(docs, settings)
    order = {d: i for i, d in enumerate(sorted(splits, key=lambda d: hashlib.sha256(
        f"{settings['split_seed']}:{d}".encode()).hexdigest()))}
    plans: list[ShardPlan] = []
    for split in SPLITS:
        jobs = [
            {"key": sample_key(d.doc_id, p), "kind": d.kind, "path": d.path, "page": p, "source": d.source,
             "doc_id": d.doc_id, "split": split, "queries": queries.get((d.doc_id, p), []), "num_pages": d.pages,
             "row_group": d.row_group, "row_in_group": d.row_in_group}
            for d in sorted((d for d in docs if splits[d.doc_id] == split), key=lambda d: order[d.doc_id])
            for p in range(d.pages)
        ]
        size = settings["shard_size"]
        for i in range(0, len(jobs), size):
            plans.append(ShardPlan(shard_name(split, i // size), split, jobs[i : i + size]))
    for sp in plans:
        # `path` is where this machine reads a file, not part of the content: leave it out of the key.
        content = [{k: v for k, v in j.items() if k != "path"} for j in sp.jobs]
        sp.plan = hashlib.sha256(json.dumps({"settings": settings, "jobs": content}, sort_keys=True).encode()).hexdigest()
    return plans


def shard_still_good(path: Path, entry: dict | None, plan: str) -> bool:
    """A shard from an earlier run is kept when it was made from the same plan and its bytes verify."""
    if entry is None or entry.get("plan") != plan or not path.is_file():
        return False
    return path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]


def known_entries(out_dir: Path) -> dict[str, dict]:
    """Shard entries recorded by earlier runs: the manifest, then the partial record of an interrupted run."""
    known: dict[str, dict] = {}
    for name in (MANIFEST, PARTIAL):
        p = out_dir / name
        if p.is_file():
            try:
                shards = json.loads(p.read_text()).get("shards", [])
            except (json.JSONDecodeError, AttributeError):
                continue
            known.update({e["name"]: e for e in shards if isinstance(e, dict) and "name" in e})
    return known


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write `data` unless the file already holds exactly it (a no-op run writes nothing)."""
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True


def save_partial(out_dir: Path, entries: list[dict]) -> None:
    write_if_changed(out_dir / PARTIAL, json_bytes({"shards": entries}))


def rejects_bytes(rejects: list[Reject]) -> bytes:
    rows = sorted(rejects, key=lambda r: (r.source, -1 if r.page is None else r.page))
    lines = [json.dumps({k: v for k, v in vars(r).items() if v is not None}, sort_keys=True) for r in rows]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def remove_stale(out_dir: Path, keep: set[str]) -> list[str]:
    """Delete shards of an older plan and temporary files left by a killed run; returns what was removed."""
    removed = []
    for p in sorted(out_dir.iterdir()):
        stale_shard = p.suffix == ".tar" and p.name.split("-")[0] in SPLITS and p.name not in keep
        if stale_shard or (p.name.startswith(".") and ".tmp-" in p.name):
            p.unlink()
            removed.append(p.name)
    return removed


def verify(out_dir: str | Path) -> list[str]:
    """Check a shard directory against its manifest (names, sizes, sha256, sample counts, split totals); returns
    the problems found, one line each (empty: all good)."""
    try:
        return verify_dir(out_dir)[1]
    except ManifestError as e:
        return [str(e)]


def main(argv: list[str] | None = None) -> int:
    """`python -m data_prep.shards DIR`: verify a shard directory against its manifest (exit 1 on a problem)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m data_prep.shards", description=main.__doc__.splitlines()[0])
    parser.add_argument("shard_dir", help="a directory holding manifest.json")
    shard_dir = parser.parse_args(argv).shard_dir
    try:
        manifest, problems = verify_dir(shard_dir)
    except ManifestError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    for p in problems:
        sys.stderr.write(p + "\n")
    sys.stdout.write(f"{len(manifest['shards'])} shards, {manifest['splits']}: {'FAILED' if problems else 'ok'}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
