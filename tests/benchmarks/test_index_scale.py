"""The index-scale benchmark's logic on hand-made inputs: recall against the exact top-10, percentiles, the
same-ranking rule Qdrant is held to, the goals met and missed, growth ratios, and drawn vectors that do not depend
on the range they are drawn in and carry the statistics they were drawn from."""

import json
import math
import statistics

import pytest
import torch

from benchmarks.index_scale_real import grid_of
from benchmarks.index_scale_summary import goals, growth, markdown, percentile, point, recall_at_k, same_ranking
from benchmarks.index_scale_vectors import ExitStats, VectorSet, cut, draw_pages
from pipeline.model.budgets import Budget

FULL, CASCADE = [["L4-d128-p1", 10]], [["L4-d128-page", 500], ["L4-d128-p1", 10]]


def test_recall_counts_the_exact_top10_found():
    truth = [[f"p{i}" for i in range(10)], [f"p{i}" for i in range(10, 20)]]
    got = [[f"p{i}" for i in range(10)][::-1], [f"p{i}" for i in range(15, 25)]]  # order is free; 5 of 10 found
    assert recall_at_k(got, truth) == pytest.approx((1.0 + 0.5) / 2)
    assert recall_at_k([["x"] * 10, ["y"] * 10], truth) == 0.0  # negative: nothing of the truth found
    assert recall_at_k([None, got[1]], truth) == 0.5  # a query not run is not counted as found
    with pytest.raises(ValueError):
        recall_at_k([None], truth[:1])


def test_percentile_interpolates_like_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(4.8)  # numpy.percentile([1..5], 95)
    assert percentile([7.0], 95) == 7.0
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_same_ranking_allows_only_ties_at_the_cut():
    keys, scores = ["a", "b", "c"], [3.0, 2.0, 1.0]
    assert same_ranking(keys, scores, ["c", "a", "b"], [3.0, 2.0, 1.0])  # the same pages
    assert same_ranking(["a", "b", "c"], scores, ["a", "b", "d"], [3.0, 2.0, 1.0005])  # d ties c at the cut
    assert not same_ranking(["a", "b", "c"], scores, ["a", "b", "d"], [3.0, 2.0, 0.9])  # d scores lower
    assert not same_ranking(["a", "b", "c"], scores, ["a", "d", "c"], [3.0, 2.0, 1.0])  # a swap mid-list
    assert not same_ranking(keys, scores, ["a", "b"], [3.0, 2.0])  # fewer results


def run(latency, keys=None, clients=1):
    return {"clients": clients, "latency_ms": latency, "keys": keys or [None] * len(latency), "wall_s": 1.0,
            "cpu_s": 0.5}


def pt(engine, stages, pages, p50, recall=None):
    coll = {"ram_bytes": pages * 10, "disk_bytes": pages * 20, "build_s": 2.0, "budgets": ["x"]}
    return point(engine, stages, pages, run([p50] * 3), coll, "model", recall, 3)


def test_point_has_the_issue_schema():
    p = json.loads(json.dumps(point("qdrant", FULL, 1000, run([1.0, 2.0, 3.0, 4.0]),
                                    {"ram_bytes": 5000, "disk_bytes": 8000, "build_s": 4.0, "budgets": ["L4-d128-p1"]},
                                    "model", 0.9, 4)))
    for key in ("engine", "stages", "pages", "clients", "recall_at_10", "p50_ms", "p95_ms", "ram_bytes_per_page",
                "disk_bytes_per_page", "build_pages_per_s", "vectors"):
        assert key in p
    assert (p["p50_ms"], p["ram_bytes_per_page"], p["disk_bytes_per_page"], p["build_pages_per_s"]) == (2.5, 5, 8, 250)


def test_goals_met_and_missed():
    met = [pt("flat", FULL, 100_000, 200.0, 1.0), pt("qdrant", CASCADE, 100_000, 10.0, 0.97),
           pt("qdrant", CASCADE, 1_000_000, 25.0, 0.9)]
    g = goals(met, {"equal": 1.0, "compared": 30}, FULL, CASCADE, 100_000, 1_000_000)
    assert all(v["met"] for v in g.values()), g
    assert g["cascade_10x_faster_than_flat_full_at_100k"]["value"] == 20.0
    assert g["cascade_growth_100k_to_1m"]["value"] == 2.5
    missed = [pt("flat", FULL, 100_000, 50.0, 1.0), pt("qdrant", CASCADE, 100_000, 10.0, 0.94),
              pt("qdrant", CASCADE, 1_000_000, 31.0, 0.9)]
    g = goals(missed, {"equal": 0.99, "compared": 30}, FULL, CASCADE, 100_000, 1_000_000)
    assert not any(v["met"] for k, v in g.items() if k != "million_pages_indexed")
    assert g["cascade_recall_at_100k"]["value"] == 0.94 and g["cascade_growth_100k_to_1m"]["value"] == 3.1
    assert all(v["measured"] for v in g.values())
    none = goals(met[:2], {"equal": 0.0, "compared": 0}, FULL, CASCADE, 100_000, 1_000_000)  # no 1M point, no compare
    assert [k for k, v in none.items() if not v["measured"]] == [
        "qdrant_exact_equals_flat", "cascade_growth_100k_to_1m", "million_pages_indexed"]
    assert not any(none[k]["met"] for k in ("qdrant_exact_equals_flat", "cascade_growth_100k_to_1m"))
    assert "not measured" in markdown({"commit": "abc", "command": "x", "points": met, "goals": none})
    none = goals(missed[:2], {"equal": 0.0, "compared": 0}, FULL, CASCADE, 100_000, 1_000_000)
    assert not none["million_pages_indexed"]["met"] and none["cascade_growth_100k_to_1m"]["value"] is None
    assert "**missed**" in markdown({"commit": "abc", "command": "x", "points": missed, "goals": g})


def test_growth_ratios_per_scale():
    points = [pt("flat", FULL, 10, 1.0), pt("flat", FULL, 100, 10.0), pt("flat", FULL, 1000, 95.0)]
    points[0]["ram_bytes_per_page"] = 100.0  # 1000 bytes at 10 pages, then 10 bytes a page: 1900 bytes at 100
    points[1]["ram_bytes_per_page"] = 19.0
    rows = growth(points, [10, 100, 1000])
    assert rows[0]["ratio"] == {"10->100": 10.0, "100->1000": 9.5}
    assert rows[0]["ram_bytes_per_added_page"]["10->100"] == pytest.approx(10.0)


def test_drawn_pages_do_not_depend_on_the_range_drawn():
    d = 8
    stats = ExitStats(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64),
                      torch.zeros(4, d, dtype=torch.float64), 0.1 * torch.eye(d, dtype=torch.float64))
    whole = draw_pages(stats, 0, 300, 4, seed=3)
    assert torch.equal(whole[250:300], draw_pages(stats, 250, 300, 4, seed=3))
    assert not torch.equal(whole[:50], draw_pages(stats, 0, 50, 4, seed=4))  # another seed, other pages
    assert torch.allclose(whole.norm(dim=-1), torch.ones(300, 4))


def test_fit_recovers_the_statistics_drawn_from():
    d, g = 4, torch.Generator().manual_seed(0)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    page_cov = a @ a.T / d
    means = torch.randn(20_000, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(page_cov).T + 1.0
    cells = torch.linspace(-0.5, 0.5, 3 * d, dtype=torch.float64).reshape(3, d)
    cells -= cells.mean(0)  # residuals about the page mean average to zero over a page's cells
    res = torch.randn(20_000, 3, d, generator=g, dtype=torch.float64) * math.sqrt(0.05)
    fit = ExitStats.fit(means[:, None] + cells + res - res.mean(1, keepdim=True))
    assert torch.allclose(fit.mean, torch.ones(d, dtype=torch.float64), atol=0.05)
    assert torch.allclose(fit.page_cov, page_cov, atol=0.05)
    assert torch.allclose(fit.cell_mean, cells, atol=0.02)
    assert statistics.mean(fit.residual_cov.diagonal().tolist()) == pytest.approx(0.05 * 2 / 3, rel=0.1)


def test_cut_pools_the_drawn_grid_like_the_model():
    full = torch.nn.functional.normalize(torch.randn(2, 16, 8), dim=-1)
    page = cut(full, (4, 4), Budget(4, 8, 1 << 16))
    assert page[0].shape == (1, 8)
    assert torch.allclose(page[0][0], torch.nn.functional.normalize(full[0].mean(0), dim=0), atol=1e-6)
    assert cut(full, (4, 4), Budget(4, 4, 2))[1].shape == (4, 4)


def test_vector_file_round_trip(tmp_path):
    b = Budget.parse("L4-d128-p1")
    items = [{b: torch.randn(n, 128)} for n in (3, 1, 2)]
    VectorSet.of(items, ["a", "b", "c"], [{"q": 1}] * 3).save(tmp_path / "v.safetensors")
    back = VectorSet.load(tmp_path / "v.safetensors")
    assert back.keys == ["a", "b", "c"] and back.meta[2] == {"q": 1}
    assert torch.equal(back.item(1, b), items[1][b].half())
    both = VectorSet.cat([back, back])
    assert len(both) == 6 and torch.equal(both.item(4, b), items[1][b].half())


def test_grid_of_is_exact_and_square_most():
    assert grid_of(1024) == (32, 32) and grid_of(1280) == (32, 40) and grid_of(16) == (4, 4)
    assert grid_of(7) == (1, 7)


def test_cache_returns_only_what_was_stored_for_the_same_spec(tmp_path):
    from benchmarks.index_scale_cache import Cache

    cache = Cache(tmp_path / "measured")
    spec = {"engine": "qdrant", "budgets": ["L4-d128-p1"], "pages": 1000, "plans": [{"stages": [["L4-d128-p1", 10]]}]}
    assert cache.get(spec) is None
    cache.put(spec, {"ram_bytes": 5, "runs": [1, 2]})
    assert Cache(tmp_path / "measured").get(dict(reversed(spec.items()))) == {"ram_bytes": 5, "runs": [1, 2]}
    assert cache.get({**spec, "pages": 10_000}) is None  # negative: another scale is not this one
    path = cache.path(spec)
    path.write_text(path.read_text()[:20])  # a truncated file is measured again, not a crash
    assert cache.get(spec) is None
    other = {**spec, "pages": 7}
    path.write_text(json.dumps({"spec": other, "value": 1}))  # a file holding another spec's value under this name
    assert cache.get(spec) is None


def test_per_million_separates_the_fixed_cost_from_each_page():
    from benchmarks.index_scale_real import per_million

    def row(pages, fixed, per_page):  # what measure_budget reports: resident growth divided by pages
        return {"pages": pages, "ram_bytes_per_page": (fixed + per_page * pages) / pages, "disk_bytes_per_page": 9.0,
                "build_pages_per_s": 1.0, "p50_ms": 1.0}

    r = per_million(row(1000, 70e6, 2000.0), row(3000, 70e6, 2000.0))
    assert r["ram_bytes_per_page"] == pytest.approx(2000.0) and r["ram_fixed_bytes"] == pytest.approx(70e6)
    assert r["ram_gib_per_million"] == pytest.approx((70e6 + 2000.0 * 1e6) / 2**30)
    assert r["fits_1m_on_24gb"] and [m["pages"] for m in r["measured"]] == [1000, 3000]
    big = per_million(row(1000, 70e6, 20_000.0), row(3000, 70e6, 20_000.0))  # 18.7 GiB: over the 16 GiB line
    assert not big["fits_1m_on_24gb"]
