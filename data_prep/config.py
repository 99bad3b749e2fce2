"""The data-prep sections of the config tree: the synthetic corpus (synth.py) and the render job (render.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.configlib import FieldError, Fraction, NonNegInt, PosFloat, PosInt, Section


class SynthConfig(Section):
    """Deterministic synthetic corpus (data_prep/synth.py)."""

    out_dir: str = "demo_out/corpus"
    """Where the PDFs and queries.jsonl are written."""
    n_docs: PosInt = 40
    """Number of documents."""
    pages_per_doc: PosInt = 3
    """Pages per document (the minimum when pages_per_doc_max is larger)."""
    page_size: PosInt = 112
    """Page side in points (1 pt = 1 px at 72 dpi)."""
    codes_per_page: PosInt = 2
    """Codes printed on each page (the minimum when codes_per_page_max is larger)."""
    code_len: PosInt = 3
    """Letters per code."""
    vocab_size: PosInt = 400
    """Distinct codes."""
    font_size: PosInt = 20
    """Font size of the codes in points."""
    layout: Literal["grid", "free", "rich"] = "grid"
    """grid: codes on token-aligned rows; free: random horizontal offset; rich: tables, charts and text too."""
    queries_per_page: NonNegInt = 1
    """Queries per page (each one of the page's codes); at most codes_per_page."""
    seed: int = 0
    """Seed of the corpus (page contents)."""
    codes_per_page_max: NonNegInt = 3
    """Above codes_per_page: each page gets a uniform count in [codes_per_page, this]."""
    pages_per_doc_max: NonNegInt = 0
    """Above pages_per_doc: each document gets a uniform count in [pages_per_doc, this]."""
    row_px: PosInt = 28
    """Code rows (and grid columns) in px: patch 14 x merge 2 of Qwen2-VL."""
    unique_codes: bool = True
    """Each page's answer codes appear on no other page (exact relevance)."""
    vocab_seed: int = 0
    """Seed of the code vocabulary; keep it equal across train and eval corpora."""
    fact_queries: bool = False
    """rich layout: add one natural-language query per page."""
    eval_docs: NonNegInt = 0
    """0: one corpus in out_dir. N: the corpus above goes to out_dir/train and N more documents to out_dir/eval
    (seed + 1, answer codes unique among them, same vocabulary: with unique_codes false every eval query is a code
    that training pages answer); one queries.jsonl for both. Render with render.split_by=path."""

    @model_validator(mode="after")
    def check(self):
        if self.queries_per_page > self.codes_per_page:
            raise FieldError("queries_per_page", f"{self.queries_per_page} exceeds codes_per_page "
                                                 f"{self.codes_per_page}")
        if self.vocab_size > 26**self.code_len:
            raise FieldError("vocab_size", f"{self.vocab_size} exceeds the {26**self.code_len} codes of length "
                                           f"{self.code_len}")
        if self.layout == "rich" and self.page_size < 224:
            raise FieldError("page_size", f"layout rich needs page_size >= 224 (try 448), got {self.page_size}")
        return self


class RenderConfig(Section):
    """The render job (data_prep/render.py): documents -> WebDataset shards."""

    input: str = "demo_out/corpus"
    """A directory tree of PDFs, a list file of paths, or a Parquet file or directory."""
    output: str = "demo_out/shards"
    """The shard directory (manifest.json, shards, rejects.jsonl)."""
    queries: str | None = None
    """JSON lines {doc, page, query}; null: <input>/queries.jsonl when present."""
    dpi: PosInt = 72
    """Render resolution of PDF pages."""
    max_pixels: PosInt = 1_000_000
    """Cap on width*height of a page image; the DPI is lowered to fit."""
    image_format: Literal["png", "jpeg"] = "png"
    """png (lossless) or jpeg."""
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 90
    """JPEG quality (1-100) when image_format is jpeg."""
    shard_size: PosInt = 256
    """Samples per shard."""
    eval_fraction: Fraction = 0.2
    """Fraction of documents (never of pages) held out as the eval split."""
    split_seed: int = 0
    """Seed of the train/eval split by document."""
    pages_per_task: PosInt = 16
    """Pages rendered per Ray task."""
    max_in_flight: PosInt = 8
    """Ray tasks in flight at once."""
    max_file_mb: PosFloat = 512.0
    """Larger input files are rejected."""
    ray_address: str | None = None
    """Ray cluster address; null: RAY_ADDRESS, else a local Ray."""
    num_cpus: PosInt | None = None
    """CPUs of a local Ray (null: all)."""
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = 6
    """zlib level for PNG (0-9); lossless at every level."""
    object_store_mb: PosInt | None = None
    """Object store of a local Ray in MiB; null: Ray's default."""
    progress: bool = True
    """A tqdm bar of pages done (stderr)."""
    split_by: Literal["hash", "path"] = "hash"
    """hash: seeded split by document; path: train/ and test|eval|val/ folders (and HF train-*/test-*.parquet
    names) decide, other documents fall back to the seeded split."""
