"""The synthetic corpus: byte-identical across runs, each query on exactly one page (checked on the PDFs' text), grid geometry."""

from __future__ import annotations

import json
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from data_prep.synth import code_vocab, synthesize
from data_prep.config import SynthConfig


def page_words(pdf_path: Path) -> list[set[str]]:
    pdf = pdfium.PdfDocument(pdf_path)
    return [set(pdf[i].get_textpage().get_text_range().split()) for i in range(len(pdf))]


def test_same_config_gives_byte_identical_corpus(tmp_path):
    a = synthesize(SynthConfig(out_dir=str(tmp_path / "a"), n_docs=5))
    b = synthesize(SynthConfig(out_dir=str(tmp_path / "b"), n_docs=5))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 6
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    c = synthesize(SynthConfig(out_dir=str(tmp_path / "c"), n_docs=5, seed=1))
    assert (c / "queries.jsonl").read_bytes() != (a / "queries.jsonl").read_bytes()


def test_default_corpus_every_query_answered_by_exactly_one_page(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path))
    out = synthesize(cfg)
    pages = {(p.name, i): words for p in sorted(out.glob("*.pdf")) for i, words in enumerate(page_words(p))}
    assert len(pages) == cfg.n_docs * cfg.pages_per_doc
    vocab = set(code_vocab(cfg.vocab_size, cfg.code_len, cfg.vocab_seed))
    assert all(2 <= len(w) <= 3 and w <= vocab for w in pages.values())
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert len(queries) == len(pages)
    for q in queries:
        assert [k for k, words in pages.items() if q["query"] in words] == [(q["doc"], q["page"])]


def _code_boxes(pdf_path: Path, page_h: float) -> list[tuple[float, float, float]]:
    """(left x, top y from the page top, bottom y from the page top) of each code's first letter."""
    pdf = pdfium.PdfDocument(pdf_path)
    out = []
    for i in range(len(pdf)):
        tp = pdf[i].get_textpage()
        text = tp.get_text_range()
        starts = [j for j, ch in enumerate(text) if ch.isalpha() and (j == 0 or not text[j - 1].isalpha())]
        for j in starts:
            left, bottom, _, top = tp.get_charbox(j)
            out.append((left, page_h - top, page_h - bottom))
    return out


def test_grid_codes_sit_in_token_cells_and_free_ones_do_not(tmp_path):
    grid = synthesize(SynthConfig(out_dir=str(tmp_path / "g"), n_docs=6, layout="grid"))
    boxes = [b for p in grid.glob("*.pdf") for b in _code_boxes(p, 112)]
    for left, top, bottom in boxes:
        assert left % 28 < 3  # glyph side bearing only
        assert int(top // 28) == int(bottom // 28)  # inside one 28-px row
    free = synthesize(SynthConfig(out_dir=str(tmp_path / "f"), n_docs=6, layout="free"))
    lefts = [b[0] % 28 for p in free.glob("*.pdf") for b in _code_boxes(p, 112)]
    assert sum(x >= 3 for x in lefts) > len(lefts) // 2


def test_rich_pages_carry_their_own_facts(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path), n_docs=4, layout="rich", page_size=448, fact_queries=True)
    out = synthesize(cfg)
    texts = {(p.name, i): pdfium.PdfDocument(p)[i].get_textpage().get_text_range()
             for p in sorted(out.glob("*.pdf")) for i in range(cfg.pages_per_doc)}
    assert all("annual review" in t and "Quarter one" in t for t in texts.values())
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert len(queries) == 2 * len(texts)
    for q in queries:
        # a fact query names the page's unique entity and year (as printed in its title)
        needle = q["query"].removesuffix(" contracts")
        assert [k for k, t in texts.items() if needle in t] == [(q["doc"], q["page"])]


def test_vocab_is_shared_across_corpora_and_too_small_a_vocab_is_refused(tmp_path):
    assert code_vocab(400, 3, 0) == code_vocab(400, 3, 0) != code_vocab(400, 3, 1)
    with pytest.raises(ValueError, match="unique_codes"):
        synthesize(SynthConfig(out_dir=str(tmp_path / "x"), n_docs=200, vocab_size=100))
    out = synthesize(SynthConfig(out_dir=str(tmp_path / "y"), n_docs=200, vocab_size=100, unique_codes=False))
    assert len((out / "queries.jsonl").read_text().splitlines()) == 600


def test_held_out_eval_corpus_answers_with_codes_training_has_seen(tmp_path):
    """synth.eval_docs: train/ and eval/ corpora, one queries.jsonl naming paths inside out_dir; each eval query is
    on exactly one eval page (read from the PDFs' text) and is a query of some training page too."""
    cfg = SynthConfig(out_dir=str(tmp_path), n_docs=60, vocab_size=48, unique_codes=False, eval_docs=5)
    out = synthesize(cfg)
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    split = {"train": [q for q in queries if q["doc"].startswith("train/")],
             "eval": [q for q in queries if q["doc"].startswith("eval/")]}
    assert len(split["train"]) == 180 and len(split["eval"]) == 15 and len(queries) == 195
    eval_pages = {(p.relative_to(out).as_posix(), i): words for p in sorted((out / "eval").glob("*.pdf"))
                  for i, words in enumerate(page_words(p))}
    for q in split["eval"]:
        assert [k for k, words in eval_pages.items() if q["query"] in words] == [(q["doc"], q["page"])]
    trained = {q["query"] for q in split["train"]}
    assert sum(q["query"] in trained for q in split["eval"]) >= 13  # 180 draws over 48 codes miss ~2%
    assert all((out / q["doc"]).is_file() for q in queries)
