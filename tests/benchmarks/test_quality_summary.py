"""The quality experiment's machine-checked summary: per recipe and budget mean, std and seed count computed from
the runs' results, separately trained models reported at their own budget only, the table and both plots drawn."""

import json
import statistics

import pytest

from benchmarks.quality_experiment import CLI, markdown, plot_curves, plot_pareto, read_curve, summary
from pipeline.cli import parse_cli

BUDGETS = ["L2-d8-p1", "L2-d8-p2", "L1-d4-p1", "L1-d4-p2"]


def fake_results(offset: float, seeds: int) -> list[dict]:
    return [{"rows": [{"budget": b, "ndcg_at_5": offset + 0.1 * i + 0.01 * s, "bytes_per_page": 64 >> i}
                      for i, b in enumerate(BUDGETS)],
             "wall_s": 60.0 + s, "curve": {"L2-d8-p1": [(10, 0.1 + s / 10), (20, 0.2 + s / 10)]}} for s in range(seeds)]


def test_summary_schema_and_statistics(tmp_path):
    cfg = parse_cli(CLI, ["--config", "configs/experiment.yaml", "experiment.recipes={truncation: [loss.budgets=full], "
                          "joint: [loss.budgets=grid], only-L1-d4-p2: [loss.budgets=only, loss.only=L1-d4-p2]}",
                          "experiment.default_recipe=joint", "experiment.recipe_seeds={}", "experiment.precision_recipes=[]", "model.widths=[8,4]", "model.dim=8", "model.pools=[1,2]"])
    results = {"truncation": fake_results(0.0, 3), "joint": fake_results(0.5, 2), "only-L1-d4-p2": fake_results(0.2, 3)}
    got = json.loads(json.dumps(summary(cfg, results, "abc1234")))  # JSON-clean
    assert got["commit"] == "abc1234" and got["baseline"] == "truncation" and got["default_recipe"] == "joint"
    assert set(got["recipes"]) == {"truncation", "joint", "only-L1-d4-p2"}
    assert list(got["recipes"]["truncation"]) == BUDGETS
    assert list(got["recipes"]["only-L1-d4-p2"]) == ["L1-d4-p2"]  # its own budget only
    cell = got["recipes"]["joint"]["L2-d8-p2"]
    want = [0.5 + 0.1 + 0.01 * s for s in range(2)]
    assert cell == {"mean": pytest.approx(statistics.mean(want)), "std": pytest.approx(statistics.stdev(want)),
                    "seeds": 2}
    assert got["wall_s"]["truncation"] == [60.0, 61.0, 62.0]
    table = markdown(got)
    assert "| L1-d4-p2 | 8 |" in table and "joint (n=2)" in table
    row = next(line for line in table.splitlines() if line.startswith("| L2-d8-p1 "))
    assert row.count(" - ") == 1  # the separately trained model has no cell at another budget
    plot_pareto(got, tmp_path / "pareto.png")
    plot_curves(results, tmp_path / "curves.png")
    assert (tmp_path / "pareto.png").stat().st_size > 5000 and (tmp_path / "curves.png").stat().st_size > 5000


def test_read_curve_keeps_the_last_record_of_a_step(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 10, "loss": 2.0}, {"step": 10, "ndcg_at_5/full": 0.1}, {"step": 20, "ndcg_at_5/full": 0.3},
            {"step": 20, "ndcg_at_5/full": 0.4}]  # step 20 re-logged after a resume
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_curve(metrics) == {"full": [(10, 0.1), (20, 0.4)]}
    assert read_curve(tmp_path / "missing.jsonl") == {}


def test_goals_are_checked_on_the_default_recipe():
    from benchmarks.quality_experiment import goals

    sizes = {"L4-d32-p1": 256, "L2-d32-p2": 32, "L1-d16-p4": 8}

    def cell(m, sd=0.01):
        return {"mean": m, "std": sd, "seeds": 3}

    result = {"default_recipe": "joint", "baseline": "truncation", "bytes_per_page": sizes, "recipes": {
        "truncation": {"L4-d32-p1": cell(0.905), "L2-d32-p2": cell(0.5), "L1-d16-p4": cell(0.2)},
        "joint": {"L4-d32-p1": cell(0.9), "L2-d32-p2": cell(0.86), "L1-d16-p4": cell(0.4)},
        "only-L2-d32-p2": {"L2-d32-p2": cell(0.85)}}}
    assert goals(result) == {"at_least_baseline_everywhere": True, "L2-d32-p2_at_least_95pct_of_full": True,
                             "L2-d32-p2_at_least_separately_trained": True}
    result["recipes"]["truncation"]["L4-d32-p1"] = cell(0.93)  # more than a std above at the full budget
    result["recipes"]["only-L2-d32-p2"] = {"L2-d32-p2": cell(0.87)}
    result["recipes"]["joint"]["L2-d32-p2"] = cell(0.84)
    assert goals(result) == {"at_least_baseline_everywhere": False, "L2-d32-p2_at_least_95pct_of_full": False,
                             "L2-d32-p2_at_least_separately_trained": False}
