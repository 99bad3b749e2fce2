"""The index-scale benchmark's pure logic: recall against the exact top-10, latency percentiles, the points of the
results file, the issue's goals (met or missed, with the measured value), growth ratios and the markdown table."""

from __future__ import annotations

import math

MILLION = 1_000_000
EXACT_TOL = 1e-3  # the scores two engines may differ by and still be the same ranking (fp16 storage, tie order)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def recall_at_k(got: list[list[str]], truth: list[list[str]], k: int = 10) -> float:
    """Mean over queries of |got top-k & truth top-k| / |truth top-k| (queries without truth are skipped)."""
    pairs = [(g, t) for g, t in zip(got, truth) if g is not None and t]
    if not pairs:
        raise ValueError("recall of no queries")
    return sum(len(set(g[:k]) & set(t[:k])) / len(t[:k]) for g, t in pairs) / len(pairs)


def same_ranking(a_keys: list[str], a_scores: list[float], b_keys: list[str], b_scores: list[float],
                 tol: float = EXACT_TOL) -> bool:
    """Whether two top-k lists are the same result: the same pages, or scores equal rank by rank within `tol`
    (pages tied within `tol` may trade places at the cut-off) and every differing page scoring within `tol` of the
    last kept score."""
    if set(a_keys) == set(b_keys):
        return True
    if len(a_scores) != len(b_scores) or any(abs(x - y) > tol for x, y in zip(a_scores, b_scores)):
        return False
    last = min(min(a_scores), min(b_scores))
    differ = (set(a_keys) ^ set(b_keys))
    score = {**dict(zip(a_keys, a_scores)), **dict(zip(b_keys, b_scores))}
    return all(score[k] <= last + tol for k in differ)


def stages_name(stages: list) -> str:
    """[[budget, limit], ...] -> 'budget' for one stage, 'b1:n1 > b2:n2 > ...' for a cascade."""
    if len(stages) == 1:
        return str(stages[0][0])
    return " > ".join(f"{b}:{n}" for b, n in stages)


def point(engine: str, stages: list, pages: int, run: dict, collection: dict, vectors: str,
          recall: float | None, recall_queries: int) -> dict:
    """One row of the results (the issue's schema, plus how it was measured)."""
    lat = [x for x in run["latency_ms"] if x is not None]
    return {"engine": engine, "stages": stages, "pages": pages, "clients": run["clients"],
            "recall_at_10": recall, "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
            "ram_bytes_per_page": collection["ram_bytes"] / pages,
            "disk_bytes_per_page": collection["disk_bytes"] / pages,
            "build_pages_per_s": pages / collection["build_s"] if collection.get("build_s") else None,
            "vectors": vectors, "queries": len(lat), "recall_queries": recall_queries,
            "qps": len(lat) / run["wall_s"], "cpu_ms_per_query": 1000 * run["cpu_s"] / len(lat),
            "collection": collection["budgets"], "load_avg_1m": run.get("load_avg_1m")}


def find(points: list[dict], engine: str, stages: list, pages: int, clients: int = 1) -> dict | None:
    for p in points:
        if (p["engine"], p["stages"], p["pages"], p["clients"]) == (engine, stages, pages, clients):
            return p
    return None


def goal(value, target, met: bool, **extra) -> dict:
    """A goal's entry; one without a value was not measured (and is not met)."""
    return {"value": value, "goal": target, "met": bool(met), "measured": value not in (None, []), **extra}


def cpu_ratio(a: dict | None, b: dict | None) -> float | None:
    """a's process CPU ms per query over b's: the wall-clock ratio's counterpart that the machine's load moves less."""
    return a["cpu_ms_per_query"] / b["cpu_ms_per_query"] if a and b and a.get("cpu_ms_per_query") else None


def goals(points: list[dict], exact: dict, full: list, cascade: list, small: int, large: int) -> dict:
    """The issue's goals from the points: `exact` = {"equal": fraction of (query, budget) whose Qdrant top-10 is
    flat's, "compared": how many}; `full` the full budget's single stage; `cascade` the chosen cascade; `small`,
    `large` the 100k and 1M page counts."""
    compared = exact["compared"] > 0
    out = {"qdrant_exact_equals_flat": goal(exact["equal"] if compared else None, 1.0,
                                            compared and exact["equal"] == 1.0, compared=exact["compared"],
                                            identical_sets=exact.get("identical") if compared else None)}
    c100, f100 = find(points, "qdrant", cascade, small), find(points, "flat", full, small)
    recall = c100["recall_at_10"] if c100 else None
    out["cascade_recall_at_100k"] = goal(recall, ">= 0.95", recall is not None and recall >= 0.95,
                                         stages=cascade, pages=small)
    speed = f100["p50_ms"] / c100["p50_ms"] if c100 and f100 else None
    out["cascade_10x_faster_than_flat_full_at_100k"] = goal(speed, ">= 10", speed is not None and speed >= 10,
                                                            unit="flat full-budget p50 / cascade p50, 1 client",
                                                            cpu_ratio=cpu_ratio(f100, c100))
    c1m = find(points, "qdrant", cascade, large)
    growth = c1m["p50_ms"] / c100["p50_ms"] if c1m and c100 else None
    out["cascade_growth_100k_to_1m"] = goal(growth, "<= 3", growth is not None and growth <= 3,
                                            unit="cascade p50 at 1M / at 100k, 1 client",
                                            cpu_ratio=cpu_ratio(c1m, c100))
    at_1m = sorted({stages_name(p["stages"]) for p in points if p["engine"] == "qdrant" and p["pages"] >= MILLION})
    out["million_pages_indexed"] = goal(at_1m, "some budget indexed and searched at 1M pages", bool(at_1m))
    return out


def growth(points: list[dict], scales: list[int], clients: int = 1) -> list[dict]:
    """Per engine and stages: p50 at each scale and its ratio to the previous scale's, and the RAM each page adds
    between consecutive scales (the fixed cost of an open collection cancels out)."""
    rows = {}
    for p in points:
        if p["clients"] == clients:
            rows.setdefault((p["engine"], stages_name(p["stages"])), {})[p["pages"]] = p
    out = []
    for (engine, name), by in sorted(rows.items()):
        pairs = [(a, b) for a, b in zip(scales, scales[1:]) if a in by and b in by]
        ram = lambda n: by[n]["ram_bytes_per_page"] * n  # noqa: E731
        out.append({"engine": engine, "stages": name, "p50_ms": {n: by[n]["p50_ms"] for n in by},
                    "ratio": {f"{a}->{b}": by[b]["p50_ms"] / by[a]["p50_ms"] for a, b in pairs},
                    "ram_bytes_per_added_page": {f"{a}->{b}": (ram(b) - ram(a)) / (b - a) for a, b in pairs}})
    return out


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _points_table(points: list[dict]) -> list[str]:
    lines = ["| engine | stages | pages | vectors | clients | recall@10 | p50 ms | p95 ms | RAM B/page | disk B/page "
             "| build pages/s |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in sorted(points, key=lambda p: (p["pages"], p["engine"], len(p["stages"]), str(p["stages"]), p["clients"])):
        lines.append(f"| {p['engine']} | {stages_name(p['stages'])} | {p['pages']:,} | {p['vectors']} | {p['clients']} "
                     f"| {_fmt(p['recall_at_10'], '.3f')} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} "
                     f"| {p['ram_bytes_per_page']:,.0f} | {p['disk_bytes_per_page']:,.0f} "
                     f"| {_fmt(p['build_pages_per_s'], ',.0f')} |")
    return lines


def _growth_table(rows: list[dict]) -> list[str]:
    lines = ["| engine | stages | p50 ms by pages | growth | RAM bytes per added page |", "|---|---|---|---|---|"]
    for r in rows:
        p50 = ", ".join(f"{int(n):,}: {v:.1f}" for n, v in sorted(r["p50_ms"].items(), key=lambda x: int(x[0])))
        ratio = ", ".join(f"{k}: {v:.1f}x" for k, v in r["ratio"].items())
        ram = ", ".join(f"{k}: {v:,.0f}" for k, v in r["ram_bytes_per_added_page"].items())
        lines.append(f"| {r['engine']} | {r['stages']} | {p50} | {ratio} | {ram} |")
    return lines


def _real_table(rows: list[dict]) -> list[str]:
    lines = ["| config | vectors/page | budget | stored vectors/page | disk B/page | RAM B/page | disk GiB / 1M pages "
             "| RAM GiB / 1M pages | 1M pages on 24 GB |", "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['page_tokens']:,} | {r['budget']} | {r['vectors_per_page']:,} "
                     f"| {r['disk_bytes_per_page']:,.0f} | {r['ram_bytes_per_page']:,.0f} "
                     f"| {r['disk_gib_per_million']:,.1f} | {r['ram_gib_per_million']:,.1f} "
                     f"| {'fits' if r['fits_1m_on_24gb'] else 'needs a cluster'} |")
    return lines


def markdown(result: dict) -> str:
    """The results as markdown: the points, the goals, growth with scale, the real configs, the notes."""
    lines = [f"# Index scale: Qdrant Edge vs the flat exact index (commit {result['commit'][:12]})", "",
             f"`{result['command']}`", ""]
    for line in result.get("about", []):
        lines += [line, ""]
    lines += _points_table(result["points"])
    lines += ["", "## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for name, g in result["goals"].items():
        v = g["value"]
        v = f"{v:.3f}" if isinstance(v, float) else v
        met = "yes" if g["met"] else "**missed**" if g.get("measured", True) else "not measured"
        lines.append(f"| {name} | {v} | {g['goal']} | {met} |")
    if result.get("growth"):
        lines += ["", "## ms/query with scale (1 client)", ""] + _growth_table(result["growth"])
    if result.get("real_configs"):
        lines += ["", "## Real configs (drawn vectors at their vectors per page)", ""]
        lines += _real_table(result["real_configs"])
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
