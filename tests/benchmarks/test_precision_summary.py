"""The precision summary: retention is the mean of per-seed ratios to the same budget at fp16, and the goals at
(L/2, 32, pool 2) check retention and (for bits) the 1/16 byte ratio."""

import json
import statistics

import pytest

from benchmarks.precision_quality import goals, markdown, summary

VALUES = {"L2-d32-p2": [0.80, 0.90], "L2-d32-p2-int8": [0.799, 0.897], "L2-d32-p2-bin": [0.76, 0.86],
          "L4-d32-p2": [0.5, 0.6], "L4-d32-p2-int8": [0.5, 0.6], "L4-d32-p2-bin": [0.2, 0.3]}
BYTES = {"L2-d32-p2": 256, "L2-d32-p2-int8": 136, "L2-d32-p2-bin": 16, "L4-d32-p2": 256, "L4-d32-p2-int8": 136,
         "L4-d32-p2-bin": 16}


def runs(values=VALUES, sizes=BYTES) -> list[dict]:
    return [{"rows": [{"budget": b, "ndcg_at_5": v[s], "bytes_per_page": sizes[b]} for b, v in values.items()]}
            for s in range(2)]


def test_retention_statistics_and_goals():
    got = json.loads(json.dumps(summary({"joint": runs()}, "abc")))  # JSON-clean
    ret = got["retention"]["joint"]
    assert set(ret) == {b for b in VALUES if b.endswith(("-int8", "-bin"))}  # fp16 rows are the reference
    want = [0.76 / 0.80, 0.86 / 0.90]
    assert ret["L2-d32-p2-bin"]["mean"] == pytest.approx(statistics.mean(want))
    assert ret["L2-d32-p2-bin"]["std"] == pytest.approx(statistics.stdev(want))
    assert got["recipes"]["joint"]["L2-d32-p2"] == {"mean": pytest.approx(0.85), "std": pytest.approx(
        statistics.stdev([0.8, 0.9])), "seeds": 2}
    # bin keeps ~95.0-95.6%: met; int8 keeps ~99.8%: met
    assert got["goals"] == {"joint:L2-d32-p2-int8_keeps_99.5%": True, "joint:L2-d32-p2-bin_keeps_95.0%": True}
    assert "| L2-d32-p2 | 256 | 0.850 ± 0.071 | 136 |" in markdown(got)


def test_goals_miss_on_retention_or_bytes():
    worse = {**VALUES, "L2-d32-p2-bin": [0.70, 0.86]}
    assert not summary({"joint": runs(worse)}, "abc")["goals"]["joint:L2-d32-p2-bin_keeps_95.0%"]
    fat = {**BYTES, "L2-d32-p2-bin": 17}  # more than 1/16 of the fp16 bytes
    result = summary({"joint": runs(sizes=fat)}, "abc")
    assert not goals(result)["joint:L2-d32-p2-bin_keeps_95.0%"]


def test_no_retention_where_fp16_scores_zero():
    dead = {**VALUES, "L4-d32-p2": [0.0, 0.6]}  # one seed found nothing at fp16: the ratio is undefined
    result = summary({"joint": runs(dead)}, "abc")
    assert "L4-d32-p2-bin" not in result["retention"]["joint"] and "L4-d32-p2-int8" not in result["retention"]["joint"]
    assert "L2-d32-p2-bin" in result["retention"]["joint"] and result["recipes"]["joint"]["L4-d32-p2-bin"]["seeds"] == 2
    assert "| L4-d32-p2 | 256 | 0.300 ± 0.424 | 136 |" in markdown(result)


def test_main_summarises_the_test_results_of_the_recipe_chosen_on_validation(tmp_path):
    from benchmarks.precision_quality import main

    def write(recipe: str, seed: int, val: float, test: float) -> None:
        d = tmp_path / "runs" / f"{recipe}-s{seed}"
        for split, base in (("validation", val), ("test", test)):
            rows = [{"budget": b, "ndcg_at_5": base * v[0], "bytes_per_page": BYTES[b]} for b, v in VALUES.items()]
            (d / f"eval-{split}").mkdir(parents=True)
            (d / f"eval-{split}" / "results.json").write_text(json.dumps({"rows": rows}))
        (d / "wall.json").write_text(json.dumps({"train_s": 1, "eval_validation_s": 1, "eval_test_s": 1}))

    args = [f"experiment.out_dir={tmp_path}", f"experiment.precision_results={tmp_path / 'p.json'}",
            "experiment.seeds=[0, 1]"]
    write("distill+lr6e-4", 0, 0.5, 1.0)
    assert main(args) == 1  # the other candidate has not finished: no choice, nothing to summarise
    write("distill+lr3e-4", 0, 0.6, 0.5)  # better on validation, worse on test
    write("distill+lr3e-4", 1, 0.6, 0.5)
    assert main(args) == 0
    got = json.loads((tmp_path / "p.json").read_text())
    assert got["roles"] == {"default": "distill+lr3e-4"} and got["split"] == "test" and got["page_size"] == 224
    assert got["recipes"]["default"]["L2-d32-p2"] == {"mean": pytest.approx(0.4), "std": 0.0, "seeds": 2}
    assert got["retention"]["default"]["L2-d32-p2-bin"]["mean"] == pytest.approx(0.76 / 0.80)
