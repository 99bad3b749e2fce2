"""The budget-grid evaluation end to end on a tiny model: rows agree with an independent brute-force reference,
bytes/page is exact, the report files are right, and the metrics land in the training run in MLflow."""

import csv
import io
import json

import mlflow
import numpy as np
import pytest

from pipeline.evaluate.__main__ import run
from pipeline.data.reader import ShardPages
from pipeline.evaluate.data import ParquetEvalSet
from pipeline.evaluate.report import pareto_front
from pipeline.model.budgets import Budget
from pipeline.model.retriever import Retriever
from pipeline.registry.register import ensure_experiment
from tests.helpers.reference import hand_metrics
from tests.helpers.reference import ref_maxsim
from tests.helpers.reference import half, hand_bin, hand_int8


CASCADES = [[["L4-d128-page", 6], ["L2-d32-p2-int8", 4], ["L4-d128-p1", 3]],  # a real cascade (tie-free stages)
            [["L4-d32-p1", 12], ["L4-d128-p1", 12]]]  # its first stage keeps every page: exact search


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, chain):
    model_dir, shards = chain.model_dir, chain.shards
    out = tmp_path_factory.mktemp("eval")
    cfg = chain.config(f"eval.output_dir={out}", "eval.precisions=[fp16, int8, bin]",
                       "model.widths=[128, 32]", "model.pools=[1, 2]", f"eval.cascades={json.dumps(CASCADES)}")
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    experiment = ensure_experiment(mlflow.MlflowClient(cfg.tracking.tracking_uri), cfg.tracking)  # artifacts in tmp
    with mlflow.start_run(experiment_id=experiment) as training_run:  # stands in for the run that wrote run.json
        pass
    run_json = {"mlflow_run_id": training_run.info.run_id, "tracking_uri": cfg.tracking.tracking_uri,
                "experiment": cfg.tracking.experiment, "steps": 7}
    (model_dir.parent / "run.json").write_text(json.dumps(run_json))
    try:
        results = run(cfg)
    finally:
        (model_dir.parent / "run.json").unlink()
    return model_dir, shards, out, results, training_run.info.run_id, cfg


def test_rows_match_brute_force_reference(evaluated):
    model_dir, shards, _, results, _, _ = evaluated
    rows = {r["budget"]: r for r in results["rows"]}
    assert len(rows) == 4 * 2 * 2 * 3 and results["pages"] == 12 and results["queries"] == 12
    retriever = Retriever.from_pretrained(model_dir).eval()
    pages = list(ShardPages(shards, "train").pages())
    stored = {"fp16": lambda v: [half(x) for x in v], "int8": hand_int8, "bin": hand_bin}  # by hand, per vector
    for budget in [Budget(2, 32, 2), Budget(4, 128, 1), Budget(2, 32, 2, "bin"), Budget(4, 128, 1, "int8")]:
        pv = retriever.embed(pages=[p.image for p in pages], budget=budget)
        qv = retriever.embed(queries=[p.queries[0] for p in pages], budget=budget)
        hand_pages = [[stored[budget.precision](v) for v in p.tolist()] for p in pv]
        scores = ref_maxsim([q.tolist() for q in qv], hand_pages)
        hand = []
        for i, row in enumerate(scores):
            # trec_eval's order: score descending, ties (pages with the same sign bits) by page key descending
            order = [pages[j].key for j in sorted(range(len(pages)), key=lambda j: (row[j], pages[j].key), reverse=True)]
            hand.append(hand_metrics(order, {pages[i].key: 1}))
        got = rows[str(budget)]
        for m in hand[0]:
            assert got[m] == pytest.approx(sum(h[m] for h in hand) / len(hand), abs=1e-9), (budget, m)
        # 4 x 4 grid per page: ceil(4/p)^2 vectors x (2 dim | dim + 2 | dim / 8) bytes.
        per_vector = {"fp16": 2 * budget.dim, "int8": budget.dim + 2, "bin": budget.dim // 8}[budget.precision]
        assert got["bytes_per_page"] == (-(-4 // budget.pool)) ** 2 * per_vector and got["precision"] == budget.precision
        assert got["encode_ms_per_page"] > 0


def test_report_files_and_pareto(evaluated):
    _, _, out, results, _, _ = evaluated
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["budget"] for r in table] == [r["budget"] for r in results["rows"]]
    assert float(table[0]["ndcg_at_5"]) == results["rows"][0]["ndcg_at_5"]
    md = (out / "results.md").read_text().splitlines()
    assert sum(line.startswith("| L") and " > " not in line for line in md) == len(results["rows"])
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front = pareto_front(results["rows"])
    for r in results["rows"]:  # every row is on the front or dominated by a front row
        assert r in front or any(f["bytes_per_page"] <= r["bytes_per_page"] and f["ndcg_at_5"] >= r["ndcg_at_5"]
                                 for f in front)
    toy = [{"bytes_per_page": 1, "ndcg_at_5": 0.2}, {"bytes_per_page": 2, "ndcg_at_5": 0.1},
           {"bytes_per_page": 4, "ndcg_at_5": 0.5}, {"bytes_per_page": 4, "ndcg_at_5": 0.4}]
    assert pareto_front(toy) == [toy[0], toy[2]]


def test_metrics_logged_to_training_run(evaluated):
    _, _, _, results, run_id, cfg = evaluated
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    data = client.get_run(run_id).data
    row = results["rows"][-1]
    assert data.metrics[f"eval.{row['budget']}.ndcg_at_5"] == pytest.approx(row["ndcg_at_5"])
    assert data.tags["eval_fingerprint"] == results["eval_fingerprint"]
    logged = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/results.md", "eval/results.csv", "eval/pareto.png", "eval/results.json"} <= logged


def test_parquet_eval_set_reads_same_pages(evaluated, tmp_path):
    """A Parquet set of the same pages (one row per query, an image repeated) gives the same pages and queries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, shards, _, _, _, _ = evaluated
    pages = list(ShardPages(shards, "train", max_pages=4).pages())
    blobs = []
    for p in pages:
        buf = io.BytesIO()
        p.image.save(buf, format="PNG")
        blobs.append(buf.getvalue())
    rows = {"image": [{"bytes": b} for b in blobs] + [{"bytes": blobs[0]}],
            "query": [p.queries[0] for p in pages] + ["second query of page 0"]}
    pq.write_table(pa.table(rows), tmp_path / "eval.parquet")
    got = list(ParquetEvalSet(tmp_path / "eval.parquet").pages())
    assert len(got) == len(pages)
    assert got[0].queries == [pages[0].queries[0], "second query of page 0"]
    assert [g.queries for g in got[1:]] == [p.queries for p in pages[1:]]
    assert all(np.array_equal(np.asarray(g.image), np.asarray(p.image)) for g, p in zip(got, pages))


def test_cascade_rows_equal_a_plain_python_cascade(evaluated):
    """Each stage keeps its best pages of the previous stage's (plain-Python MaxSim over hand-quantised pages);
    the metrics are those of the last stage's ranking; a first stage that keeps every page is exact search."""
    model_dir, shards, out, results, _, _ = evaluated
    retriever = Retriever.from_pretrained(model_dir).eval()
    pages = list(ShardPages(shards, "train").pages())
    stored = {"fp16": lambda v: [half(x) for x in v], "int8": hand_int8, "bin": hand_bin}
    rows = {r["cascade"]: r for r in results["cascades"]}
    assert list(rows) == ["L4-d128-page:6 > L2-d32-p2-int8:4 > L4-d128-p1:3", "L4-d32-p1:12 > L4-d128-p1:12"]
    scores = {}
    for name in {b for c in CASCADES for b, _ in c}:
        b = Budget.parse(name)
        pv = retriever.embed(pages=[p.image for p in pages], budget=b)
        qv = retriever.embed(queries=[p.queries[0] for p in pages], budget=b)
        scores[name] = ref_maxsim([q.tolist() for q in qv], [[stored[b.precision](v) for v in p.tolist()] for p in pv])
    for cascade, row in zip(CASCADES, rows.values()):
        hand = []
        for i in range(len(pages)):
            keep = list(range(len(pages)))
            for name, limit in cascade:
                keep = sorted(keep, key=lambda j: (scores[name][i][j], pages[j].key), reverse=True)[:limit]
            hand.append(hand_metrics([pages[j].key for j in keep], {pages[i].key: 1}))
        for m in ("ndcg_at_5", "ndcg_at_10", "recall_at_1", "mrr_at_10"):
            assert row[m] == pytest.approx(sum(h[m] for h in hand) / len(hand), abs=1e-9), (row["cascade"], m)
        assert row["ms_per_query"] > 0
    exact = next(r for r in results["rows"] if r["budget"] == "L4-d128-p1")
    assert rows["L4-d32-p1:12 > L4-d128-p1:12"]["ndcg_at_5"] == pytest.approx(exact["ndcg_at_5"], abs=1e-9)
    # bytes/page: every stage's budget is stored (4 x 4 grid; page: 1 vector; int8: dim + 2 bytes)
    assert rows["L4-d128-page:6 > L2-d32-p2-int8:4 > L4-d128-p1:3"]["bytes_per_page"] == 256 + 4 * 34 + 16 * 256
    assert "| L4-d128-page:6 > L2-d32-p2-int8:4 > L4-d128-p1:3 |" in (out / "results.md").read_text()
