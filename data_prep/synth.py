"""Deterministic synthetic corpus: seeded multi-page PDFs (reportlab) and a queries file each of whose queries one page answers.

Every page carries 2-3 three-letter uppercase codes on their own rows; the query is a code. With
`synth.unique_codes` (default) each page's answer code appears on no other page of the corpus, so
relevance is exact. Layouts: `grid` (codes on rows and columns of the 28-px token grid: learnable by a
tiny model on CPU), `free` (random horizontal offset), `rich` (a larger page with a title, paragraphs,
a table and a bar chart, and the answer codes printed large).

    python data_prep/synth.py [--config F] [synth.key=value ...]
"""

from __future__ import annotations

import json
import logging
import random
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas

from data_prep.config import SynthConfig
from pipeline.cli import Command, parse_cli
from pipeline.logs import setup_logging

log = logging.getLogger(__name__)
FONT = "Helvetica-Bold"
CAP_HEIGHT = 0.718  # Helvetica-Bold cap height per unit of font size

_ADJ = ["Northern", "Coastal", "Granite", "Silver", "Eastern", "Harbor", "Summit", "Maple", "Crystal", "Pioneer",
        "Western", "Golden", "Central", "Meadow", "Atlas", "Cedar", "Orbit", "Lumen", "Vertex", "Delta"]
_NOUN = ["Logistics", "Foods", "Energy", "Textiles", "Robotics", "Mining", "Pharma", "Shipping", "Software",
         "Ceramics", "Aviation", "Telecom", "Insurance", "Forestry", "Optics", "Dairy", "Bakeries", "Freight"]
_TOPIC = ["revenue", "headcount", "exports", "energy use", "orders", "returns", "inventory", "patents"]
_REGION = ["north", "south", "east", "west", "centre"]


@dataclass
class PagePlan:
    """What one page shows: its codes (answer codes first) and, in the rich layout, its own facts."""

    codes: list[str]
    answers: list[str]  # the page's query codes (a prefix of `codes`)
    entity: str = ""
    year: int = 0
    figures: list[int] = field(default_factory=list)


def code_vocab(size: int, length: int, seed: int) -> list[str]:
    """`size` distinct uppercase codes of `length` letters, a pure function of the arguments."""
    if size > 26**length:
        raise ValueError(f"synth.vocab_size={size} exceeds the {26**length} codes of length {length}")
    rng = random.Random(f"vocab:{seed}:{length}")
    seen: dict[str, None] = {}
    while len(seen) < size:
        seen.setdefault("".join(rng.choices(string.ascii_uppercase, k=length)), None)
    return list(seen)


def _counts(cfg: SynthConfig, rng: random.Random) -> list[list[int]]:
    """Codes per page for every page of every document (page counts vary when pages_per_doc_max is set)."""
    top_pages = max(cfg.pages_per_doc, cfg.pages_per_doc_max)
    top_codes = max(cfg.codes_per_page, cfg.codes_per_page_max)
    return [[rng.randint(cfg.codes_per_page, top_codes) for _ in range(rng.randint(cfg.pages_per_doc, top_pages))]
            for _ in range(cfg.n_docs)]


def plan_corpus(cfg: SynthConfig) -> list[list[PagePlan]]:
    """Decide every page's codes and facts; [doc][page] -> PagePlan. Pure function of `cfg`."""
    rng = random.Random(f"corpus:{cfg.seed}")
    counts = _counts(cfg, rng)
    vocab = code_vocab(cfg.vocab_size, cfg.code_len, cfg.vocab_seed)
    n_pages = sum(len(d) for d in counts)
    shuffled = rng.sample(vocab, len(vocab))
    if cfg.unique_codes:
        n_answers = n_pages * cfg.queries_per_page
        pool = shuffled[n_answers:]
        if len(pool) < max(cfg.codes_per_page, cfg.codes_per_page_max):
            raise ValueError(
                f"synth.vocab_size={cfg.vocab_size} is too small for {n_answers} answer codes found on one page each "
                "plus distractors: lower n_docs or set synth.unique_codes=false")
        answers = iter(shuffled[:n_answers])
    entities = rng.sample([f"{a} {n}" for a in _ADJ for n in _NOUN], k=min(n_pages, len(_ADJ) * len(_NOUN)))
    plans, i = [], 0
    for doc in counts:
        pages = []
        for k in doc:
            if cfg.unique_codes:
                own = [next(answers) for _ in range(cfg.queries_per_page)]
                codes = own + rng.sample(pool, k - len(own))
            else:
                codes = rng.sample(vocab, k)
            pages.append(PagePlan(codes=codes, answers=codes[: cfg.queries_per_page], entity=entities[i % len(entities)],
                                  year=2000 + (i // len(entities)) % 30,
                                  figures=[rng.randint(10, 990) for _ in range(4)]))
            i += 1
        plans.append(pages)
    return plans


def _page_size(cfg: SynthConfig) -> tuple[int, int]:
    if cfg.layout == "rich":  # SynthConfig checks page_size >= 224 for it
        return cfg.page_size, cfg.row_px * round(cfg.page_size * 1.3 / cfg.row_px)
    return cfg.page_size, cfg.page_size


def _draw_codes(c: canvas.Canvas, page: PagePlan, cfg: SynthConfig, rng: random.Random, top: float, width: int) -> None:
    """Codes on distinct rows of `row_px` below `top`; x on the token grid (grid) or anywhere (free, rich)."""
    rows = int(top // cfg.row_px)
    if len(page.codes) > rows:
        raise ValueError(f"{len(page.codes)} codes do not fit {rows} rows of {cfg.row_px} px: raise synth.page_size")
    c.setFont(FONT, cfg.font_size)
    for code, row in zip(page.codes, rng.sample(range(rows), len(page.codes))):
        text_w = stringWidth(code, FONT, cfg.font_size)
        slack = max(0, int(width - text_w))
        x = rng.randint(0, slack // cfg.row_px) * cfg.row_px if cfg.layout == "grid" else rng.randint(0, slack)
        baseline = top - row * cfg.row_px - cfg.row_px / 2 - CAP_HEIGHT * cfg.font_size / 2
        c.drawString(x, baseline, code)


def _draw_rich(c: canvas.Canvas, page: PagePlan, cfg: SynthConfig, rng: random.Random, w: int, h: int) -> float:
    """Title, paragraph, table and bar chart in the upper part; returns the y where the code band starts."""
    m, body = w * 0.06, max(6.0, w / 48)
    c.setFont(FONT, body * 1.6)
    c.drawString(m, h - m - body * 1.6, f"{page.entity} annual review {page.year}")
    c.setFont("Helvetica", body)
    topic = rng.choice(_TOPIC)
    lines = [f"In {page.year} {page.entity} reported {topic} of {page.figures[0]} units,",
             f"up from {page.figures[1]} a year before; the {rng.choice(_REGION)} division led growth.",
             f"The board approved {page.figures[2]} new contracts and {page.figures[3]} site visits."]
    y = h - m - body * 4
    for line in lines:
        c.drawString(m, y, line)
        y -= body * 1.4
    y -= body
    table_top = y + body
    for label, value in zip(["Quarter one", "Quarter two", "Quarter three", "Quarter four"], page.figures):
        c.rect(m, y - body * 0.4, w * 0.4, body * 1.4, stroke=1, fill=0)
        c.drawString(m + 2, y, label)
        c.drawRightString(m + w * 0.4 - 2, y, str(value))
        y -= body * 1.4
    base, bar_w = y - body * 0.5, w * 0.08
    for j, value in enumerate(page.figures):
        c.setFillGray(0.3 + 0.15 * j)
        c.rect(w * 0.55 + j * bar_w * 1.4, base, bar_w, value / 1000 * (table_top - base), stroke=0, fill=1)
    c.setFillGray(0)
    return base - body


def write_pdf(path: Path, pages: list[PagePlan], cfg: SynthConfig, doc_index: int) -> None:
    """Write one document; `invariant=1` keeps reportlab's output byte-identical across runs."""
    w, h = _page_size(cfg)
    rng = random.Random(f"layout:{cfg.seed}:{doc_index}")
    c = canvas.Canvas(str(path), pagesize=(w, h), invariant=1)
    c.setTitle(f"Synthetic document {doc_index}")
    for page in pages:
        top = _draw_rich(c, page, cfg, rng, w, h) if cfg.layout == "rich" else float(h)
        _draw_codes(c, page, cfg, rng, top, w)
        c.showPage()
    c.save()


def fact_query(page: PagePlan) -> str:
    """A natural-language query that only this rich page answers (entities are unique per page)."""
    return f"{page.entity} annual review {page.year} contracts"


TRAIN_DIR, EVAL_DIR = "train", "eval"  # with synth.eval_docs; render.split_by=path reads the split from them


def synthesize(cfg: SynthConfig) -> Path:
    """Write `doc-NNNNN.pdf` files and `queries.jsonl` ({doc, page, query} lines, doc relative to cfg.out_dir) into
    cfg.out_dir; with cfg.eval_docs, a training corpus under train/ and a held-out one under eval/."""
    out = Path(cfg.out_dir)
    parts = [("", cfg)]
    if cfg.eval_docs:
        held_out = cfg.model_copy(update=dict(n_docs=cfg.eval_docs, seed=cfg.seed + 1, unique_codes=True, eval_docs=0))
        parts = [(f"{TRAIN_DIR}/", cfg), (f"{EVAL_DIR}/", held_out)]
    lines = []
    for prefix, part in parts:
        _page_size(part)  # refuse a bad layout before writing anything
        plans = plan_corpus(part)
        (out / prefix).mkdir(parents=True, exist_ok=True)
        for d, pages in enumerate(plans):
            name = f"{prefix}doc-{d:05d}.pdf"
            write_pdf(out / name, pages, part, d)
            for p, page in enumerate(pages):
                facts = [fact_query(page)] if part.fact_queries and part.layout == "rich" else []
                queries = list(page.answers) + facts
                lines += [json.dumps({"doc": name, "page": p, "query": q}) for q in queries]
        log.info("wrote %d documents, %d pages to %s", len(plans), sum(map(len, plans)), out / prefix)
    (out / "queries.jsonl").write_text("\n".join(lines) + "\n")
    log.info("%d queries in %s", len(lines), out / "queries.jsonl")
    return out


CLI = Command("python data_prep/synth.py", "Write a deterministic synthetic PDF corpus and its queries.",
              sections=("synth",))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(CLI, argv)
    setup_logging()
    try:
        synthesize(cfg.synth)
    except ValueError as e:  # a config that cannot be laid out (names the key to change)
        log.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
