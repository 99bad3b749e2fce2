"""The render job: documents (PDFs, page images, Parquet page-image sets) -> WebDataset shards + manifest.json, as Ray tasks.

    ray job submit --address http://HEAD:8265 --working-dir . -- python data_prep/render.py --input DIR --output DIR
    python data_prep/render.py --input DIR --output DIR [--queries F] [--config F] [render.key=value ...]

Without a cluster address (render.ray_address or RAY_ADDRESS) Ray starts locally with render.num_cpus.
Files are probed in Ray tasks (rejects with reasons), documents are split train/eval by document,
pages are cut into page-range tasks (a huge PDF spreads over many) with at most render.max_in_flight
in flight, and each shard is written atomically as soon as its pages are in. Re-runs keep every shard
whose plan and checksum still match, so a killed job re-run ends with the manifest of an uninterrupted one.
Paths are read on the worker nodes: on a multi-node cluster give absolute paths on a shared filesystem.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

if __package__ in (None, ""):  # run as a script from a checkout that is not installed: the repo root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_prep import pages, shards, sources
from data_prep.config import RenderConfig
from pipeline.cli import Command, flag, parse_cli
from pipeline.layout.lock import DirectoryInUse, claim
from pipeline.layout.tars import write_shard
from pipeline.logs import setup_logging

log = logging.getLogger("data_prep.render")
CLI = Command(
    "python data_prep/render.py", "Render documents into WebDataset shards (a Ray job).",
    flags=(flag("--input", key="render.input", metavar="PATH"), flag("--output", key="render.output", metavar="DIR"),
           flag("--queries", key="render.queries", metavar="FILE")),
    sections=("render",),
)
PROBE_BATCH = 16  # files per probe task


def connect(cfg: RenderConfig) -> None:
    """Join the cluster at render.ray_address or RAY_ADDRESS (as under `ray job submit`), else start Ray locally.

    A local Ray binds 127.0.0.1 only: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 must be set before Ray is
    first imported, which is why this module imports Ray lazily.
    """
    local = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    if not local:
        ray.init(address=cfg.ray_address, log_to_driver=False)
        return
    store = cfg.object_store_mb * 2**20 if cfg.object_store_mb else None
    ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, object_store_memory=store,
             log_to_driver=False, _node_ip_address="127.0.0.1")


def shutdown() -> None:
    """Stop the Ray this process started or joined (no-op when none)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def bounded(fn: Callable, work: Iterable[tuple[Any, tuple]], max_in_flight: int) -> Iterator[tuple[Any, Any]]:
    """Run `fn.remote(*args)` for each (tag, args) with at most `max_in_flight` outstanding; yield (tag, result).

    Submission follows `work`'s order, so with ordered work the driver buffers only a few shards.
    A task that fails outright yields its exception as the result.
    """
    import ray

    pending: dict[Any, Any] = {}
    it = iter(work)

    def fill() -> None:
        for tag, args in it:
            pending[fn.remote(*args)] = tag
            if len(pending) >= max_in_flight:
                return

    fill()
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        tag = pending.pop(ref)
        try:
            result = ray.get(ref)
        except Exception as e:  # a crashed worker: the caller turns it into rejects
            result = e
        fill()
        yield tag, result


def probe_all(items: list[tuple[str, str]], cfg: RenderConfig) -> tuple[list[sources.Doc], list[sources.Reject]]:
    """Probe every input file in Ray tasks; returns accepted documents (deduplicated) and rejects."""
    import ray

    probe = ray.remote(sources.probe_files)
    max_bytes = int(cfg.max_file_mb * 2**20)
    pdfs = [it for it in items if not it[1].lower().endswith(".parquet")]
    batches = [pdfs[i : i + PROBE_BATCH] for i in range(0, len(pdfs), PROBE_BATCH)]
    batches += [[it] for it in items if it[1].lower().endswith(".parquet")]
    docs, rejects = [], []
    for batch, result in bounded(probe, ((b, (b, max_bytes)) for b in batches), cfg.max_in_flight):
        if isinstance(result, Exception):
            rejects += [sources.Reject(src, f"probe failed: {type(result).__name__}") for src, _ in batch]
            continue
        for r in result:
            if "doc" in r:
                docs.append(sources.Doc(**r["doc"]))
            else:
                rejects.append(sources.Reject(**r["reject"]))
    docs, dupes = sources.dedupe(docs)
    return docs, rejects + dupes


def _page_tasks(todo: list[shards.ShardPlan], per_task: int, settings: dict) -> Iterator[tuple[Any, tuple]]:
    for s, sp in enumerate(todo):
        for c in range(0, len(sp.jobs), per_task):
            yield (s, c // per_task), (sp.jobs[c : c + per_task], settings)


def _finish_shard(out_dir: Path, sp: shards.ShardPlan, results: list[dict], ext: str) -> dict:
    """Write one shard from its page results (bad pages left out and listed); returns its manifest entry."""
    samples = [(r["key"], {ext: r["image"], "json": r["json"]}) for r in results if "error" not in r]
    written = write_shard(out_dir / sp.name, samples)
    entry = {"name": sp.name, "split": sp.split, "samples": len(samples), **written, "plan": sp.plan}
    by_key = {j["key"]: j for j in sp.jobs}
    bad = [{"source": by_key[r["key"]]["source"], "page": by_key[r["key"]]["page"],
            "reason": f"render failed: {r['error']}"} for r in results if "error" in r]
    if bad:
        entry["rejected_pages"] = bad
    return entry


def _isolate(task: Any, jobs: list[dict], settings: dict) -> list[dict]:
    """After a worker died on a page range (a crash, not an exception), render its pages one task each, so
    only the page that kills a worker is lost (reported as a rejected page)."""
    import ray

    out = []
    for j in jobs:
        try:
            out += ray.get(task.options(max_retries=1).remote([j], settings))
        except Exception as e:  # this page itself kills the worker
            out.append({"key": j["key"], "error": f"worker failed: {type(e).__name__}"})
    return out


def make_shards(todo: list[shards.ShardPlan], settings: dict, out_dir: Path, cfg: RenderConfig,
                done: dict[str, dict]) -> None:
    """Render and write every shard in `todo`; `done` (name -> entry) grows and is saved after each shard."""
    import ray

    chunks = [-(-len(sp.jobs) // cfg.pages_per_task) for sp in todo]
    buffers: dict[int, dict[int, list[dict]]] = {}
    task = ray.remote(pages.render_pages)
    bar = tqdm(total=sum(len(sp.jobs) for sp in todo), unit="page", disable=not cfg.progress, file=sys.stderr,
               mininterval=1.0, desc="render")
    for (s, c), result in bounded(task, _page_tasks(todo, cfg.pages_per_task, settings), cfg.max_in_flight):
        jobs = todo[s].jobs[c * cfg.pages_per_task : (c + 1) * cfg.pages_per_task]
        if isinstance(result, Exception):
            result = _isolate(task, jobs, settings)
        buffers.setdefault(s, {})[c] = result
        bar.update(len(jobs))
        if len(buffers[s]) == chunks[s]:
            parts = buffers.pop(s)
            results = [r for k in sorted(parts) for r in parts[k]]
            entry = _finish_shard(out_dir, todo[s], results, pages.EXT[settings["image_format"]])
            done[entry["name"]] = entry
            shards.save_partial(out_dir, list(done.values()))
    bar.close()


def render(cfg: RenderConfig) -> dict:
    """Run the whole job holding the output directory's lock (DirectoryInUse: another job holds it); returns the
    manifest (also written to <output>/manifest.json)."""
    out_dir = Path(cfg.output).expanduser().resolve()
    with claim(out_dir, "render job"):  # two jobs writing one directory would overwrite each other's shards
        return _render(cfg, out_dir)


def _render(cfg: RenderConfig, out_dir: Path) -> dict:
    settings = pages.render_settings(cfg)
    items, qfile = sources.discover(cfg.input, cfg.queries)
    items, bad_names = sources.reject_unencodable(items)
    connect(cfg)
    docs, rejects = probe_all(items, cfg)
    rejects += bad_names
    queries, unmatched = sources.attach_queries(docs, sources.load_queries(qfile))
    fp = sources.input_fingerprint(docs, rejects, queries)
    plans = shards.plan_shards(docs, queries, settings)
    known = shards.known_entries(out_dir)
    done = {sp.name: known[sp.name] for sp in plans
            if shards.shard_still_good(out_dir / sp.name, known.get(sp.name), sp.plan)}
    todo = [sp for sp in plans if sp.name not in done]
    log.info("%d documents (%d pages), %d rejected; %d shards kept, %d to make", len(docs),
             sum(d.pages for d in docs), len(rejects), len(done), len(todo))
    t0 = time.perf_counter()
    make_shards(todo, settings, out_dir, cfg, done)
    if todo:
        n = sum(len(sp.jobs) for sp in todo)
        took = time.perf_counter() - t0
        log.info("rendered %d pages in %.1f s (%.1f pages/s)", n, took, n / took)
    entries = [done[sp.name] for sp in plans]
    page_rejects = [sources.Reject(r["source"], r["reason"], r["page"])
                    for e in entries for r in e.get("rejected_pages", [])]
    extra = {"documents": len(docs), "pages": sum(e["samples"] for e in entries),
             "rejects": len(rejects) + len(page_rejects),
             "queries": {"attached": sum(len(v) for v in queries.values()), "unmatched": unmatched}}
    manifest = shards.build_manifest(settings, fp, entries, extra)
    changed = shards.write_if_changed(out_dir / shards.REJECTS, shards.rejects_bytes(rejects + page_rejects))
    changed |= shards.write_if_changed(out_dir / shards.MANIFEST, shards.json_bytes(manifest))
    if (out_dir / shards.PARTIAL).exists():
        (out_dir / shards.PARTIAL).unlink()
    removed = shards.remove_stale(out_dir, {sp.name for sp in plans})
    if removed:
        log.info("removed %d stale files: %s", len(removed), ", ".join(removed[:5]))
    verb = "wrote" if changed or todo else "nothing changed in"
    log.info("%s %s: %s", verb, out_dir / shards.MANIFEST, manifest["splits"])
    return manifest


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(CLI, argv)
    setup_logging()
    try:  # the input is checked before Ray starts: a missing one is one line, not a traceback
        sources.discover(cfg.render.input, cfg.render.queries)
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    try:
        render(cfg.render)
    except DirectoryInUse as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    finally:
        shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
