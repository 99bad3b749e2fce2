"""The index-scale benchmark at the shipped real configs' page sizes, and the --quick mode's vectors.

Real configs: a ColQwen2 / ColPali page has 700-1,300 vectors, not the tiny model's 16. Per budget, a Qdrant Edge
collection of drawn pages with the config's image tokens per page (from `python -m pipeline.plan --json`: the largest
page its max_pixels allow) gives disk and RAM bytes per page, extrapolated to a million pages (what is stored per page
does not depend on how many pages there are; Qdrant's per-point overhead is measured with it).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.index_scale_engines import DrawnPages, build_qdrant, disk_bytes
from benchmarks.index_scale_measure import run_measure
from benchmarks.index_scale_summary import percentile
from benchmarks.index_scale_vectors import ExitStats, VectorSet, draw_pages
from pipeline.model.budgets import Budget
from pipeline.model.pooling import normalize

CONFIGS = ["configs/colqwen2_2b.yaml", "configs/colpali_3b.yaml"]
REAL_BUDGETS = ["L4-d128-p1", "L4-d64-p1", "L4-d32-p2", "L4-d32-p2-bin", "L4-d16-p4", "L4-d128-page"]
FITS_GIB = 16  # a million pages "fit" a 24 GB machine shared with others when their working set stays under this
# The model's statistics as three numbers per exit (mean norm, page-mean variance, residual variance; from the full
# run's drawn_fit): --quick draws isotropic vectors with them, needing neither the model nor its vectors.
QUICK_STATS = {4: (0.55, 0.05, 0.35), 2: (0.55, 0.05, 0.35)}


def isotropic(mean_norm: float, page_var: float, residual_var: float, dim: int = 128, count: int = 16,
              seed: int = 0) -> ExitStats:
    g = torch.Generator().manual_seed(seed)
    mean = normalize(torch.randn(dim, generator=g)).double() * mean_norm
    eye = torch.eye(dim, dtype=torch.float64)
    return ExitStats(mean, eye * page_var / dim, torch.zeros(count, dim, dtype=torch.float64), eye * residual_var / dim)


def quick_vectors(work: Path, n_queries: int, count: int) -> tuple[dict, Path, dict]:
    """--quick: isotropic statistics per exit and drawn queries of 4 vectors (their file)."""
    stats = {layers: isotropic(*QUICK_STATS[layers], count=count, seed=layers) for layers in QUICK_STATS}
    q4 = draw_pages(stats[4], 0, n_queries, 4, seed=99)
    q2 = normalize(draw_pages(stats[2], 0, n_queries, 4, seed=98)[..., :32])
    items = [{Budget.parse("L4-d128-p1"): a, Budget.parse("L4-d128-page"): a, Budget.parse("L2-d32-p2"): b}
             for a, b in zip(q4, q2)]
    path = work / "queries.safetensors"
    VectorSet.of(items, [f"q{i}" for i in range(n_queries)]).save(path)
    return stats, path, {"quick": "isotropic Gaussians with QUICK_STATS: a smoke run, not the model's vectors"}


def cut_queries(qpath: Path, budgets: list[str], out: Path) -> Path:
    """The queries at other widths of the last exit: the first d coordinates of each vector, re-normalised (queries
    are not pooled), as the model cuts them."""
    queries = VectorSet.load(qpath, [Budget.parse("L4-d128-p1")])
    full = queries.parts[Budget.parse("L4-d128-p1")]
    parts = {Budget.parse(b).fp16: (normalize(full[0].float()[:, : Budget.parse(b).dim]).half(), full[1].clone())
             for b in budgets}
    VectorSet(parts, queries.keys).save(out)
    return out


def page_tokens(config: str) -> int:
    """Image tokens (= vectors) per page of a config at its largest page, from pipeline.plan."""
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "pipeline.plan", "--config", config, "--json"], cwd=root,
                         capture_output=True, text=True)
    try:
        return int(json.loads(res.stdout)["batch"]["page_tokens"])
    except (ValueError, KeyError) as e:
        raise SystemExit(f"index_scale: pipeline.plan --config {config} gave no page_tokens ({e}): "
                         f"{res.stderr.strip()[-200:]}") from None


def grid_of(tokens: int) -> tuple[int, int]:
    """The most square rows x cols grid of exactly `tokens` cells (rows <= cols)."""
    rows = max(r for r in range(1, math.isqrt(tokens) + 1) if tokens % r == 0)
    return rows, tokens // rows


def measure_budget(args, stats: dict, qpath: Path, name: str, tokens: int, budget: str, pages: int) -> dict:
    b = Budget.parse(budget)
    grid = grid_of(tokens)
    directory = args.work / "collections" / f"real-{name}-{budget}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    src = DrawnPages(stats, pages, tokens, grid, seed=7)
    per_page = src.batch([b], 0, 1)[1][b][0].shape[0]
    built = build_qdrant(directory, [b], src, batch=max(1, min(1024, (1 << 21) // (per_page * b.dim))))
    disk = disk_bytes(directory)
    measured = run_measure(args.work, "qdrant", directory, [{"stages": [[budget, 10]], "clients": [1],
                                                             "queries": 20}], qpath)
    shutil.rmtree(directory, ignore_errors=True)
    ram = (measured["memory"]["after"]["rss"] - measured["memory"]["before"]["rss"]) / pages
    run = measured["runs"][0]
    return {"config": name, "page_tokens": tokens, "grid": list(grid), "budget": budget, "vectors_per_page": per_page,
            "pages": pages, "stored_bytes_per_page": per_page * b.dim * 2, "disk_bytes_per_page": disk / pages,
            "ram_bytes_per_page": ram, "disk_gib_per_million": disk / pages * 1e6 / 2**30,
            "ram_gib_per_million": ram * 1e6 / 2**30, "fits_1m_on_24gb": ram * 1e6 / 2**30 <= FITS_GIB,
            "build_pages_per_s": pages / built["build_s"], "p50_ms": percentile(run["latency_ms"], 50)}


def per_million(small: dict, large: dict) -> dict:
    """A budget's row from its measurements at two page counts: RAM per page = the resident growth each added page
    brings (the slope), RAM per million = the fixed cost of an open collection (the intercept) + a million pages
    at that slope; disk per page from the larger collection."""
    a, b = small["pages"], large["pages"]
    ram_a, ram_b = small["ram_bytes_per_page"] * a, large["ram_bytes_per_page"] * b
    slope = (ram_b - ram_a) / (b - a)
    fixed = ram_a - slope * a
    ram_1m = fixed + slope * 1e6
    return {**large, "ram_bytes_per_page": slope, "ram_fixed_bytes": fixed, "ram_gib_per_million": ram_1m / 2**30,
            "fits_1m_on_24gb": ram_1m / 2**30 <= FITS_GIB,
            "measured": [{k: m[k] for k in ("pages", "ram_bytes_per_page", "disk_bytes_per_page", "build_pages_per_s",
                                            "p50_ms")} for m in (small, large)]}


def real_configs(args, stats: dict, qpath: Path, cache) -> list[dict]:
    """Per shipped config and budget: disk and RAM per page in Qdrant Edge at its vectors per page, each measured at
    two page counts (see per_million); each measurement from `cache` when made before."""
    configs = [("quick-256", 256)] if args.quick else [(Path(c).stem, page_tokens(c)) for c in CONFIGS]
    qpath = cut_queries(qpath, REAL_BUDGETS, args.work / "queries-real.safetensors")
    rows = []
    for name, tokens in configs:
        for budget in REAL_BUDGETS if not args.quick else REAL_BUDGETS[:: len(REAL_BUDGETS) - 1]:
            pages = args.real_pages if Budget.parse(budget).pool > 1 or Budget.parse(budget).dim < 128 \
                else max(100, args.real_pages // 2)
            both = []
            for n in (pages, 3 * pages):
                print(f"real config {name}: {tokens} vectors/page, {budget}, {n} drawn pages", flush=True)
                spec = {"real": name, "tokens": tokens, "budget": budget, "pages": n, "quick": args.quick}
                row = cache.get(spec)
                if row is None:
                    row = measure_budget(args, stats, qpath, name, tokens, budget, n)
                    cache.put(spec, row)
                both.append(row)
            rows.append(per_million(*both))
    return rows
