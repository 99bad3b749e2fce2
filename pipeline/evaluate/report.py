"""The budget-grid report: a Markdown and a CSV table, the Pareto front, and a plot of nDCG@5 against index
bytes per page with one line per depth (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pipeline.layout.files import atomic_write
from pipeline.layout.run import RESULTS
from pipeline.model.precision import PRECISIONS

MARKERS = {"fp16": "o", "int8": "s", "bin": "^"}
COLUMNS = ["budget", "layers", "dim", "pool", "precision", "ndcg_at_5", "ndcg_at_10", "recall_at_1", "recall_at_5",
           "recall_at_10", "mrr_at_10", "vectors_per_page", "bytes_per_page", "encode_ms_per_page",
           "encode_ms_per_query"]


def pareto_front(rows: list[dict], x: str = "bytes_per_page", y: str = "ndcg_at_5") -> list[dict]:
    """Rows no other row dominates (at most the bytes and strictly better, or fewer bytes and at least as good),
    sorted by bytes ascending."""
    front = []
    for r in rows:
        dominated = any((o[x] <= r[x] and o[y] > r[y]) or (o[x] < r[x] and o[y] >= r[y]) for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r[x], -r[y]))


def _fmt(v) -> str:
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 2:  # byte and vector counts
            return str(int(v))
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def write_tables(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """results.csv (full precision) and results.md (rounded, Pareto-optimal budgets marked *) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = results["rows"]
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    front = {r["budget"] for r in pareto_front(rows)}
    lines = [f"Eval set `{results['eval_set']}` (fingerprint `{results['eval_fingerprint']}`): "
             f"{results['pages']} pages, {results['queries']} queries; bytes/page at each budget's precision; "
             "`*` = Pareto-optimal (nDCG@5 vs bytes/page).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r.get(c, "")) for c in cols]
        cells[0] += " *" if r["budget"] in front else ""
        lines.append("| " + " | ".join(cells) + " |")
    cascades = results.get("cascades") or []
    if cascades:
        cols = ["cascade", "ndcg_at_5", "ndcg_at_10", "recall_at_10", "bytes_per_page", "ms_per_query"]
        lines += ["", "Cascades (each stage re-ranks the previous stage's pages; bytes/page: every stage's budget "
                      "stored):", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in cascades]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return out / "results.md", out / "results.csv"


def pareto_plot(results: dict, path: str | Path) -> Path:
    """PNG of nDCG@5 against bytes/page (log x): one colour per depth, one marker per precision, a line through
    each (depth, precision)'s budgets ordered by bytes, and the overall Pareto front dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(8, 5))
    precisions = [x for x in PRECISIONS if any(r.get("precision", "fp16") == x for r in rows)]
    for i, layers in enumerate(sorted({r["layers"] for r in rows}, reverse=True)):
        for x in precisions:
            pts = sorted((r["bytes_per_page"], r["ndcg_at_5"]) for r in rows
                         if r["layers"] == layers and r.get("precision", "fp16") == x)
            label = f"{layers} layers" + (f", {x}" if len(precisions) > 1 else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[x], color=f"C{i}",
                    ls="-" if x == "fp16" else ":", label=label)
    front = pareto_front(rows)
    ax.plot([r["bytes_per_page"] for r in front], [r["ndcg_at_5"] for r in front], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("index bytes per page")
    ax.set_ylabel("nDCG@5")
    ax.set_title(f"Budget grid on {Path(str(results['eval_set'])).name} ({results['pages']} pages)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(precisions) > 1 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """results.json, results.md, results.csv and pareto.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / RESULTS, json.dumps(results, indent=2))
    md, csv_path = write_tables(results, out)
    return [out / RESULTS, md, csv_path, pareto_plot(results, out / "pareto.png")]
