"""Benchmark: pages/s of the Ray render job vs a plain single-process pypdfium2 render+encode loop, per core.

    python benchmarks/render.py [--docs 100] [--pages 4] [--cpus 2] [--dpi 100] [--format png]

Both sides render the same synthetic "rich" corpus (612 x 792 pt pages) at the same scale and encode
with the same settings; the job also extracts text, hashes files and writes tars. Baseline and job
runs alternate (--repeats) and the medians are compared. Ray's start-up is excluded (warm workers), the
job's probe, plan and shard writing are included. Goal: ratio per core >= 0.85.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pypdfium2 as pdfium

from data_prep import pages, render, synth
from data_prep.config import RenderConfig, SynthConfig

ROOT = Path(__file__).resolve().parents[1]


def tree_cpu() -> float:
    """CPU seconds used so far by this process and every descendant (Ray's raylet, GCS and workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def baseline(corpus: Path, settings: dict) -> tuple[int, float, float]:
    """The plain loop: open each PDF, render every page at the job's scale, encode. Returns (pages, s, CPU s)."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for path in sorted(corpus.glob("*.pdf")):
        pdf = pdfium.PdfDocument(path)
        for i in range(len(pdf)):
            page = pdf[i]
            w, h = page.get_size()
            img = page.render(scale=pages.page_scale(w, h, settings["dpi"], settings["max_pixels"])).to_pil()
            pages.encode(img, settings)
            n += 1
        pdf.close()
    return n, time.perf_counter() - t0, time.process_time() - c0


def job(cfg: RenderConfig) -> tuple[int, float, float]:
    """The render job in this process on an already started Ray. Returns (pages, s, CPU s of the process tree)."""
    shutil.rmtree(cfg.output, ignore_errors=True)
    t0, c0 = time.perf_counter(), tree_cpu()
    manifest = render.render(cfg)
    return manifest["pages"], time.perf_counter() - t0, tree_cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--dpi", type=int, default=100)
    ap.add_argument("--format", default="png", choices=["png", "jpeg"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    try:
        corpus = synth.synthesize(SynthConfig(out_dir=str(work / "corpus"), n_docs=args.docs, pages_per_doc=args.pages,
                                              layout="rich", page_size=612, vocab_size=5000))
        cfg = RenderConfig(input=str(corpus), output=str(work / "shards"), dpi=args.dpi, image_format=args.format,
                           num_cpus=args.cpus, progress=False)
        settings = pages.render_settings(cfg)
        render.connect(cfg)  # a local Ray with args.cpus CPUs, bound to 127.0.0.1
        job(RenderConfig(**{**vars(cfg), "output": str(work / "warm")}))  # starts the worker processes
        base_runs, job_runs = [baseline(corpus, settings)], []
        for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits both sides alike
            job_runs.append(job(cfg))
            base_runs.append(baseline(corpus, settings))
    finally:
        render.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    assert len({r[0] for r in base_runs + job_runs}) == 1, (base_runs, job_runs)
    base = statistics.median(n / t for n, t, _ in base_runs)
    rate = statistics.median(n / t for n, t, _ in job_runs)
    ratio = rate / base
    n1 = job_runs[0][0]
    cpu_eff = statistics.median(c for _, _, c in base_runs) / statistics.median(c for _, _, c in job_runs)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"commit: {commit or 'unknown'}")
    print(f"pages: {n1} ({args.docs} docs, rich layout, {args.dpi} dpi, {args.format})")
    print(f"baseline, 1 process: {base:.1f} pages/s (median of {[round(n / t, 1) for n, t, _ in base_runs]})")
    print(f"render job, {args.cpus} Ray CPUs: {rate:.1f} pages/s (median of {[round(n / t, 1) for n, t, _ in job_runs]})")
    print(f"CPU-time efficiency (baseline CPU s / job process-tree CPU s, robust to busy neighbours): {cpu_eff:.2f}")
    print(f"ratio: {ratio:.2f}  per core: {ratio / args.cpus:.2f}  (goal >= 0.85 per core)")


if __name__ == "__main__":
    main()
