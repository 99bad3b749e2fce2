"""Benchmark: pages/s of the Ray render job vs a plain single-process pypdfium2 render+encode loop, per core.

    python benchmarks/render.py [--docs 60] [--pages 4] [--cpus 2] [--dpi 100] [--format png]

Both sides render the same synthetic "rich" corpus (612 x 792 pt pages) at the same scale and encode
with the same settings; the job also extracts text, hashes files and writes tars. The baseline runs
before and after the job and the two are averaged. Ray's start-up is excluded (warm workers), the
job's probe, plan and shard writing are included. Goal: ratio per core >= 0.85.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pypdfium2 as pdfium
import ray

from data_prep import pages, render, synth
from pipeline.config import RenderConfig, SynthConfig

ROOT = Path(__file__).resolve().parents[1]


def baseline(corpus: Path, settings: dict) -> tuple[int, float]:
    """The plain loop: open each PDF, render every page at the job's scale, encode. Returns (pages, seconds)."""
    n, t0 = 0, time.perf_counter()
    for path in sorted(corpus.glob("*.pdf")):
        pdf = pdfium.PdfDocument(path)
        for i in range(len(pdf)):
            page = pdf[i]
            w, h = page.get_size()
            img = page.render(scale=pages.page_scale(w, h, settings["dpi"], settings["max_pixels"])).to_pil()
            pages.encode(img, settings)
            n += 1
        pdf.close()
    return n, time.perf_counter() - t0


def job(cfg: RenderConfig) -> tuple[int, float]:
    """The render job in this process on an already started Ray. Returns (pages, seconds)."""
    shutil.rmtree(cfg.output, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = render.render(cfg)
    return manifest["pages"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--dpi", type=int, default=100)
    ap.add_argument("--format", default="png", choices=["png", "jpeg"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    try:
        corpus = synth.synthesize(SynthConfig(out_dir=str(work / "corpus"), n_docs=args.docs, pages_per_doc=args.pages,
                                              layout="rich", page_size=612, codes_per_page_max=3))
        cfg = RenderConfig(input=str(corpus), output=str(work / "shards"), dpi=args.dpi, image_format=args.format,
                           num_cpus=args.cpus, progress=False, max_in_flight=2 * args.cpus + 2, pages_per_task=8)
        settings = pages.render_settings(cfg)
        n0, t0 = baseline(corpus, settings)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        job(RenderConfig(**{**vars(cfg), "output": str(work / "warm")}))  # starts the worker processes
        n1, t1 = job(cfg)
        ray.shutdown()
        n2, t2 = baseline(corpus, settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert n0 == n1 == n2, (n0, n1, n2)
    base = (n0 + n2) / (t0 + t2)
    ratio = (n1 / t1) / base
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"commit: {commit or 'unknown'}")
    print(f"pages: {n1} ({args.docs} docs, rich layout, {args.dpi} dpi, {args.format})")
    print(f"baseline, 1 process: {base:.1f} pages/s (runs: {n0 / t0:.1f}, {n2 / t2:.1f})")
    print(f"render job, {args.cpus} Ray CPUs: {n1 / t1:.1f} pages/s")
    print(f"ratio: {ratio:.2f}  per core: {ratio / args.cpus:.2f}  (goal >= 0.85 per core)")


if __name__ == "__main__":
    main()
