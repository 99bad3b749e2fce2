"""The index-scale benchmark's measuring process: a fresh Python process opens one collection, warms it, and times
searches with 1..C client threads; its memory is the growth of its resident set from before the open to after
the timed searches (the serving working set: Qdrant Edge maps its vector files, so file pages it touched count).

    python -m benchmarks.index_scale_measure SPEC.json OUT.json      (run by benchmarks/index_scale.py)

SPEC: {"engine", "directory", "queries" (a vector file), "budgets", "warmup", "plans": [{"stages": [[budget, limit],
...], "clients": [1, 8], "queries": n}]}. OUT: per plan and client count, every query's latency (ms) and, from the
1-client run, its result keys; the resident-set figures; the process's CPU seconds per run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def memory() -> dict:
    """This process's resident set (bytes): total, anonymous, file-backed (/proc/self/status)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            out[fields[name]] = int(value.split()[0]) * 1024
    return out


def timed_run(engine, queries: list, stages: list, clients: int) -> dict:
    """Every query once, spread round-robin over `clients` threads each calling engine.search([q]) in turn:
    per query its latency in ms and its result keys; wall seconds and process CPU seconds for the run."""
    latency, keys, scores = [None] * len(queries), [None] * len(queries), [None] * len(queries)
    errors = []

    def client(c: int) -> None:
        try:
            for i in range(c, len(queries), clients):
                t = time.perf_counter()
                hits = engine.search([queries[i]], stages)[0]
                latency[i] = (time.perf_counter() - t) * 1000
                keys[i], scores[i] = [h.key for h in hits], [h.score for h in hits]
        except Exception as e:  # noqa: BLE001 - reported to the parent as one line
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return {"latency_ms": latency, "keys": keys, "scores": scores, "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu, "load_avg_1m": load}


def measure(spec: dict) -> dict:
    import torch

    from benchmarks.index_scale_engines import open_engine, query_dicts
    from benchmarks.index_scale_vectors import VectorSet
    from pipeline.model.budgets import Budget

    torch.set_num_threads(1)  # as the encoder: the flat engine's client threads are its parallelism
    budgets = [Budget.parse(b) for b in spec["budgets"]]
    most = max(p["queries"] for p in spec["plans"])
    queries = query_dicts(VectorSet.load(Path(spec["queries"]), list({b.fp16 for b in budgets})), budgets, most)
    before = memory()
    t = time.perf_counter()
    engine = open_engine(spec["engine"], Path(spec["directory"]))
    open_s = time.perf_counter() - t
    opened = memory()
    runs = []
    for plan in spec["plans"]:
        stages = [(Budget.parse(b), n) for b, n in plan["stages"]]
        for q in queries[: spec["warmup"]]:
            engine.search([q], stages)
    warmed = memory()
    for plan in spec["plans"]:
        stages = [(Budget.parse(b), n) for b, n in plan["stages"]]
        for clients in plan["clients"]:
            run = timed_run(engine, queries[: plan["queries"]], stages, clients)
            runs.append({"stages": plan["stages"], "clients": clients, **run})
    after = memory()
    pages = engine.count()
    engine.close()
    return {"pages": pages, "open_s": open_s, "memory": {"before": before, "opened": opened, "warmed": warmed,
                                                         "after": after}, "runs": runs}


def run_measure(work: Path, engine: str, directory: Path, plans: list[dict], queries: Path, warmup: int = 5) -> dict:
    """Measure one collection in a fresh process (this module run as a script); its result."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    spec = {"engine": engine, "directory": str(directory), "queries": str(queries), "warmup": warmup,
            "plans": plans, "budgets": sorted({b for p in plans for b, _ in p["stages"]})}
    spec_path, out_path = work / f"spec-{os.getpid()}.json", work / f"measured-{os.getpid()}.json"  # runs side by side
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-m", "benchmarks.index_scale_measure", str(spec_path), str(out_path)],
                         cwd=root, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or [f"exit code {res.returncode}"]
        raise SystemExit(f"index_scale: measuring {directory} failed: {tail[0]}")
    return json.loads(out_path.read_text())


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    Path(argv[1]).write_text(json.dumps(measure(spec)))


if __name__ == "__main__":
    main(sys.argv[1:])
