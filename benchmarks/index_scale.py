"""Benchmark the serving engines at scale: Qdrant Edge (in-process, the default engine) against the flat exact index,
per budget and cascade, at 10k, 100k and 1M pages, with 1 and 8 concurrent clients; ratios printed side by side.

    python benchmarks/index_scale.py [--out benchmarks/results/index_scale.json]      (hours on a shared 2-core box)
    python benchmarks/index_scale.py --quick                                          (drawn vectors, a minute or two)

Vectors: the trained tiny model's (configs/tiny.yaml, trained by `python -m demo` steps into --model) for the rendered
pages of --shards, each page encoded once at every budget (Retriever.embed_budgets), kept under --work; beyond the
rendered pages, vectors drawn to match the model's per-exit statistics (benchmarks/index_scale_vectors.py). Queries:
the model's vectors of the codes printed on sampled pages. Per point: build pages/s (Qdrant: the engine's upsert +
finish(); flat: the file written in one piece), disk bytes/page (du of the collection), RAM bytes/page (resident
growth of a fresh process from before opening to after the timed searches), p50/p95 ms per query (each client a
thread calling engine.search with one query at a time), recall@10 against the flat exact top-10 at the last stage's
budget. Each collection is deleted once measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.index_scale_cache import Cache  # noqa: E402
from benchmarks.index_scale_engines import (DrawnPages, ModelPages, build_flat, build_qdrant, disk_bytes,  # noqa: E402
                                            query_dicts, streamed_truth)
from benchmarks.index_scale_measure import run_measure  # noqa: E402
from benchmarks.index_scale_real import quick_vectors, real_configs  # noqa: E402
from benchmarks.index_scale_summary import (goals, growth, markdown, percentile, point, recall_at_k,  # noqa: E402
                                            same_ranking, stages_name)
from benchmarks.index_scale_vectors import ExitStats, VectorSet, encode_pages, encode_queries, fidelity  # noqa: E402
from pipeline.model.budgets import Budget  # noqa: E402

FULL, BAL, BIN, PAGE_B = "L4-d128-p1", "L2-d32-p2", "L2-d32-p2-bin", "L4-d128-page"
SINGLES = [FULL, BAL, BIN, PAGE_B]
STORED = [PAGE_B, BIN, FULL]  # the cascade collection: configs/tiny.yaml's serve.budgets
ENCODED = [FULL, PAGE_B, BAL, "L2-d128-p1"]  # the last only for the drawn vectors' statistics at exit 2
GRID, COUNT = (4, 4), 16  # the tiny model's pages: a 4 x 4 grid of merged patches


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="drawn vectors only, small scales, 1 and 2 clients")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/index_scale.json")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out/index_scale", help="vectors and collections")
    ap.add_argument("--model", type=Path, default=ROOT / "bench_out/demo/run/final")
    ap.add_argument("--shards", type=Path, default=ROOT / "bench_out/shards")
    ap.add_argument("--scales", default="100000,10000,1000000", help="page counts (the ladder's first)")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--flat-sample", type=int, default=30, help="queries timed by flat at 1M pages and more")
    ap.add_argument("--ladder", default="300,1000,2000,3000,4000,5000,7000,10000,20000",
                    help="first-stage limits tried for recall")
    ap.add_argument("--cascade-n", type=int, default=None, help="skip the ladder: this first-stage limit")
    ap.add_argument("--shared-full-from", type=int, default=1_000_000,
                    help="from this many pages the full budget is searched in the cascade collection")
    ap.add_argument("--real-pages", type=int, default=1000)
    ap.add_argument("--flat-max-pages", type=int, default=10**9,
                    help="no flat index beyond this many pages (the full budget's truth is then streamed)")
    ap.add_argument("--min-free-gib", type=float, default=3.0, help="skip a collection that would leave less")
    ap.add_argument("--minutes", type=float, default=None,
                    help="measure no new collection after this many minutes (those left are noted as not measured)")
    ap.add_argument("--essential", action="store_true",
                    help="per scale only what the goals need: the flat full budget and the cascade collection")
    ap.add_argument("--skip-real", action="store_true", help="leave out the real configs' bytes and RAM per page")
    ap.add_argument("--render", action="store_true", help="only rewrite --out's markdown from its JSON")
    a = ap.parse_args(argv)
    if a.quick:
        a.scales, a.clients, a.queries, a.ladder, a.real_pages = "3000,1000", "1,2", 30, "50,300", 100
        a.work = a.work.with_name(a.work.name + "-quick")
    a.scales = [int(x) for x in a.scales.split(",") if x and x != "none"]  # none: only the real configs
    a.clients = [int(x) for x in a.clients.split(",")]
    a.ladder = [int(x) for x in a.ladder.split(",")]
    return a


def shell(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw).stdout.strip()


def free_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def raw_bytes(budgets: list[str]) -> int:
    """Stored bytes per tiny page at these budgets (Qdrant keeps every precision as float16 values)."""
    per = {FULL: COUNT * 128 * 2, BAL: 4 * 32 * 2, BIN: 4 * 32 * 2, PAGE_B: 128 * 2}
    return sum(per[b] for b in budgets)


class Bench:
    """One run: its vectors, the collections it builds and measures, and the points they give."""

    def __init__(self, args, pages: VectorSet | None, stats: dict, queries: Path, n_queries: int):
        self.args, self.pages, self.stats, self.queries = args, pages, stats, queries
        self.n_queries = n_queries
        self.points, self.truth, self.truth_scores, self.exact, self.notes, self.ladder = [], {}, {}, [], [], []
        self.cascades: list[list] = []
        self.kept: dict[Path, dict] = {}  # collections kept between measurements (the ladder's)
        self.cache, self.fit = Cache(args.work / "measured"), {}
        self.deadline = time.time() + 60 * args.minutes if args.minutes is not None else None

    def source(self, n: int):
        if self.pages is not None and n <= len(self.pages):
            return ModelPages(self.pages, n)
        return DrawnPages(self.stats, n, COUNT, GRID)

    def collection(self, engine: str, budgets: list[str], n: int, plans: list[dict], keep: bool = False) -> dict | None:
        """One collection measured: from the cache when this spec was measured before, else built (or the one kept
        by the last call reused), measured in a fresh process, cached, and deleted unless `keep`; None when memory
        or the run's time would run short."""
        spec = {"engine": engine, "budgets": budgets, "pages": n, "plans": plans, "vectors": self.source(n).kind,
                "model_pages": len(self.pages) if self.pages is not None else 0, "queries": str(self.queries)}
        cached = self.cache.get(spec)
        if cached is not None:
            print(f"cached {engine} {'+'.join(budgets)} {n:,} pages", flush=True)
            return cached
        if self.deadline is not None and time.time() > self.deadline:
            self.notes.append(f"not measured: {engine} {'+'.join(budgets)} at {n:,} pages (the run's time, "
                              f"--minutes, was up)")
            print(self.notes[-1], flush=True)
            return None
        info = self.measure(engine, budgets, n, plans, keep)
        if info is not None:
            self.cache.put(spec, info)
        return info

    def measure(self, engine: str, budgets: list[str], n: int, plans: list[dict], keep: bool) -> dict | None:
        directory = self.args.work / "collections" / f"{engine}-{n}-{'+'.join(budgets)}"
        built = self.kept.pop(directory, None)
        if built is None:
            built = self.build(engine, budgets, n, directory)
            if built is None:
                return None
        measured = run_measure(self.args.work, engine, directory, plans, self.queries)
        if keep:
            self.kept[directory] = built
        else:
            shutil.rmtree(directory, ignore_errors=True)
        mem = measured["memory"]
        return {**built, "ram_bytes": mem["after"]["rss"] - mem["before"]["rss"], "memory": mem,
                "runs": measured["runs"], "open_s": measured["open_s"]}

    def build(self, engine: str, budgets: list[str], n: int, directory: Path) -> dict | None:
        need = raw_bytes(budgets) * n * (1.3 if engine == "flat" else 0.5)  # Edge maps its vectors: page cache
        if free_bytes() - need < self.args.min_free_gib * 2**30:
            self.notes.append(f"skipped {engine} {budgets} at {n:,} pages: {need / 2**30:.1f} GiB needed, "
                              f"{free_bytes() / 2**30:.1f} GiB available")
            print(self.notes[-1], flush=True)
            return None
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        src, bs = self.source(n), [Budget.parse(b) for b in budgets]
        print(f"build {engine} {'+'.join(budgets)} {n:,} pages ({src.kind})", flush=True)
        built = build_flat(directory, bs, src) if engine == "flat" else build_qdrant(directory, bs, src)
        return {"budgets": budgets, "disk_bytes": disk_bytes(directory), "vectors": src.kind, **built}

    def add_points(self, engine: str, n: int, info: dict) -> None:
        for run in info["runs"]:
            truth = self.truth.get((n, run["stages"][-1][0]))
            recall = recall_at_k(run["keys"], truth) if truth else None
            counted = sum(1 for g, t in zip(run["keys"], truth or []) if g is not None and t)
            p = point(engine, run["stages"], n, run, info, info["vectors"], recall, counted)
            p.update(build=dict((k, info.get(k)) for k in ("upsert_s", "optimize_s", "build_s", "open_s")))
            self.points.append(p)
            print(f"  {engine:6} {stages_name(run['stages']):45} {n:>9,} c={run['clients']} p50 {p['p50_ms']:8.1f} ms "
                  f"p95 {p['p95_ms']:8.1f} recall {p['recall_at_10'] if recall is None else round(recall, 3)}",
                  flush=True)

    def plans(self, stage_sets: list[list], n: int, flat: bool) -> list[dict]:
        """Each stage set timed with every client count; from a million pages, every exact full-budget scan (flat's,
        and Qdrant's multivector scan) on the first --flat-sample queries only."""
        def queries(s):
            scan = flat or s == [[FULL, 10]]
            return self.args.flat_sample if scan and n >= 1_000_000 else self.n_queries
        return [{"stages": [[b, min(k, n)] for b, k in s], "clients": self.args.clients, "queries": queries(s)}
                for s in stage_sets]

    def flat_truth(self, n: int, b: str) -> None:
        """The flat exact top-10 of a budget at n pages: the truth recall is measured against (and flat's point);
        beyond --flat-max-pages the full budget's truth streamed instead (no flat index in memory)."""
        if n > self.args.flat_max_pages:
            if b == FULL:
                self.notes.append(f"flat not measured at {n:,} pages (--flat-max-pages {self.args.flat_max_pages:,}):"
                                  f" its index is held in RAM by the builder and the measuring process")
                self.truth[(n, b)] = self.streamed(n, b)
            return
        info = self.collection("flat", [b], n, self.plans([[[b, 10]]], n, flat=True))
        if info:
            one = next(r for r in info["runs"] if r["clients"] == 1)
            self.truth[(n, b)], self.truth_scores[(n, b)] = one["keys"], one["scores"]
            self.add_points("flat", n, info)
        elif b == FULL:
            self.truth[(n, b)] = self.streamed(n, b)

    def run_scale(self, n: int) -> None:
        """Every point at n pages, those the goals need first: the full budget's truth, the cascades, then the rest."""
        shared = n >= self.args.shared_full_from
        self.flat_truth(n, FULL)
        if not self.cascades:
            self.choose_cascades(n)
        singles = [[[FULL, 10]]] if shared else []
        info = self.collection("qdrant", STORED, n, self.plans(self.cascades + singles, n, flat=False))
        if info:
            self.add_points("qdrant", n, info)
        if self.args.essential:
            return
        for b in SINGLES[1:]:
            self.flat_truth(n, b)
        for b in SINGLES if not shared else [x for x in SINGLES if x != FULL]:
            info = self.collection("qdrant", [b], n, self.plans([[[b, 10]]], n, flat=False))
            if info:
                self.add_points("qdrant", n, info)
                if self.source(n).kind == "model" and b != PAGE_B:  # multivectors: scanned exactly, no graph
                    self.compare_exact(n, b, next(r for r in info["runs"] if r["clients"] == 1))
        if not shared:
            info = self.collection("flat", STORED, n, self.plans(self.cascades, n, flat=True))
            if info:
                self.add_points("flat", n, info)

    def streamed(self, n: int, budget: str) -> list:
        """The exact top-10 of the first flat-sample queries, streamed (the flat index did not fit)."""
        b = Budget.parse(budget)
        queries = [q[b] for q in query_dicts(VectorSet.load(self.queries), [b], self.args.flat_sample)]
        self.notes.append(f"truth for {budget} at {n:,} pages: the flat engine's MaxSim streamed over the pages "
                          f"for {len(queries)} queries (the flat index was not measured)")
        spec = {"streamed": budget, "pages": n, "queries": len(queries), "vectors": self.source(n).kind}
        truth = self.cache.get(spec)
        if truth is None:
            truth = streamed_truth(self.source(n), b, queries)
            self.cache.put(spec, truth)
        return truth

    def compare_exact(self, n: int, budget: str, run: dict) -> None:
        keys, scores = self.truth.get((n, budget)), self.truth_scores.get((n, budget))
        for qk, qs, fk, fs in zip(run["keys"], run["scores"], keys or [], scores or []):
            self.exact.append({"identical": set(qk) == set(fk), "same": same_ranking(qk, qs, fk, fs)})

    def choose_cascades(self, n: int) -> None:
        """The smallest first-stage limit of the ladder whose 2-stage cascade keeps recall@10 >= 0.95 at n pages
        (measured in Qdrant Edge), then the 3-stage cascade's middle limit likewise (the collection built once)."""
        two = lambda k: [[PAGE_B, k], [FULL, 10]]  # noqa: E731
        three = lambda k, m: [[PAGE_B, k], [BIN, m], [FULL, 10]]  # noqa: E731
        ladder = [k for k in self.args.ladder if k <= n] if not self.args.cascade_n else [self.args.cascade_n]
        k = self.rung(n, "two", [two(k) for k in ladder], 0)
        middles = sorted({max(10, k // 8), max(10, k // 4), max(10, k // 2)})
        m = self.rung(n, "three", [three(k, m) for m in middles], 1)
        self.cascades = [two(k), three(k, m)]
        print(f"cascades chosen at {n:,} pages: {self.cascades}", flush=True)

    def rung(self, n: int, name: str, stage_sets: list[list], varied: int) -> int:
        """Measure each cascade (1 client) in the kept cascade collection; the limit at stage `varied` of the first
        whose recall@10 >= 0.95, else of the last."""
        info = self.collection("qdrant", STORED, n, [{"stages": s, "clients": [1], "queries": self.n_queries}
                                                     for s in stage_sets], keep=True)
        tried = {r["stages"][varied][1]: {"recall": recall_at_k(r["keys"], self.truth[(n, FULL)]),
                                          "p50_ms": percentile([x for x in r["latency_ms"] if x is not None], 50)}
                 for r in info["runs"]}
        chosen = next((k for k, v in tried.items() if v["recall"] >= 0.95), list(tried)[-1])
        self.ladder.append({"pages": n, "cascade": name, "stages": stage_sets[0], "tried": tried, "chosen": chosen})
        print(f"ladder {name} at {n:,} pages: {tried} -> {chosen}", flush=True)
        return chosen


def model_vectors(args) -> tuple[VectorSet, dict, Path, dict]:
    """The model's page vectors (encoded once, kept), the drawn vectors' statistics and the query file."""
    encoded = [Budget.parse(b) for b in ENCODED]
    pages = encode_pages(args.model, args.shards, encoded, args.work / "vectors")
    qpath = args.work / "queries.safetensors"
    if not qpath.exists():
        rng = random.Random(0)
        texts = [" ".join(pages.meta[i]["codes"]) for i in rng.sample(range(len(pages)), args.queries)]
        encode_queries(args.model, texts, [Budget.parse(b) for b in (FULL, PAGE_B, BAL)], qpath)
    fit = min(len(pages), 20_000)
    stats, report = {}, {}
    for layers, name in ((4, FULL), (2, "L2-d128-p1")):
        v = pages.parts[Budget.parse(name)][0][: fit * COUNT].float().reshape(fit, COUNT, -1)
        stats[layers] = ExitStats.fit(v)
        drawn = DrawnPages(stats, 2000, COUNT, GRID).batch([Budget.parse(name)], 0, 2000)[1]
        report[f"L{layers}"] = {**stats[layers].as_dict(),
                                "fidelity": fidelity(v, torch.stack(drawn[Budget.parse(name)]))}
    for b in ("L2-d128-p1",):
        pages.parts.pop(Budget.parse(b))  # only the statistics needed it
    return pages, stats, qpath, {"fit_pages": fit, **report}


def model_info(model: Path) -> dict:
    """What trained the model whose vectors these are: its run's steps and its evaluation at the budgets here."""
    run_dir = model.parent
    out = {"path": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
           "recipe": "configs/tiny.yaml (python -m demo's commands)"}
    try:
        out["steps"] = json.loads((run_dir / "run.json").read_text()).get("steps")
        res = json.loads((run_dir / "eval" / "results.json").read_text())
        out["eval_pages"] = res["pages"]
        out["ndcg_at_5"] = {r["budget"]: round(r["ndcg_at_5"], 4) for r in res["rows"] if r["budget"] in SINGLES}
    except (OSError, ValueError, KeyError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


ABOUT = [
    "Qdrant Edge = the serving engine (pipeline/serve/engines/qdrant.py + edge.py) in this process; flat = the exact "
    "index (pipeline/serve/engines/flat.py). Every point runs in a fresh process per collection.",
    "recall@10: the fraction of the flat engine's exact top-10 at the last stage's budget found; p50/p95: per query, "
    "each client a thread sending one query at a time; RAM: resident-set growth of the measuring process from before "
    "opening the collection to after its timed searches (Edge maps its vector files: touched file pages count), per "
    "page; disk: du of the collection; build: Qdrant = QdrantEngine.upsert in batches + finish(), flat = the index "
    "file written in one piece.",
    "vectors model = the trained tiny model's (16 vectors/page) for rendered synthetic pages; drawn = pages drawn to "
    "match its per-exit statistics (recall on them is reported, not a goal). Queries: the model's vectors of the codes "
    "printed on sampled pages. Timings are wall-clock on a shared 2-core machine (see machine.load_avg; "
    "cpu_ms_per_query is the process CPU time).",
]


def write_result(args, bench: Bench, real: list, started: tuple, argv: list[str], done: bool) -> dict:
    """The results so far into --out (JSON) and its markdown: written after each part, so a killed run leaves them."""
    t0, load0 = started
    small, large = ([0, 0] + sorted(args.scales))[-2:]
    exact = {"compared": len(bench.exact), "equal": sum(e["same"] for e in bench.exact) / max(len(bench.exact), 1),
             "identical": sum(e["identical"] for e in bench.exact) / max(len(bench.exact), 1)}
    pages = bench.pages
    result = {
        "commit": shell(["git", "rev-parse", "HEAD"]), "command": " ".join(["python benchmarks/index_scale.py", *argv]),
        "complete": done,
        "machine": {"cpus": os.cpu_count(), "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES") *
                                                                    os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
                    "load_avg_start": load0, "load_avg_end": os.getloadavg(), "wall_s": round(time.time() - t0)},
        "about": ABOUT, "model": None if args.quick else model_info(args.model),
        "model_pages": len(pages) if pages is not None else 0, "drawn_fit": bench.fit, "ladder": bench.ladder,
        "points": bench.points,
        "goals": goals(bench.points, exact, [[FULL, 10]], bench.cascades[0] if bench.cascades else [], small, large),
        "growth": growth(bench.points, sorted(args.scales)), "real_configs": real, "notes": bench.notes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    return result


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.render:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time(), os.getloadavg()
    if args.quick:
        pages, stats, qpath, fit = None, *quick_vectors(args.work, args.queries, COUNT)
    else:
        pages, stats, qpath, fit = model_vectors(args)
    bench = Bench(args, pages, stats, qpath, len(VectorSet.load(qpath).keys))
    bench.fit, real = fit, []
    if not args.skip_real:  # first: short, and needed whatever scales the time allows
        real = real_configs(args, stats, qpath, Cache(args.work / "measured"))
        write_result(args, bench, real, started, argv, done=False)
    for n in args.scales:
        bench.run_scale(n)
        write_result(args, bench, real, started, argv, done=False)
    print(markdown(write_result(args, bench, real, started, argv, done=True)))


if __name__ == "__main__":
    main()
