"""Render inputs: find documents (directory tree, list file, page images, Parquet page-image sets), probe them, attach queries.

Probing decides, per file, either a `Doc` (an id from its bytes and its page count) or a `Reject`
with a reason: zero-byte, oversized, not a PDF, truncated, encrypted, unreadable, duplicate. Probe
functions run inside Ray tasks; they take and return plain data only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
LIST_SUFFIXES = (".txt", ".lst", ".list")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")  # page images: one-page documents


@dataclass
class Doc:
    """One accepted document. PDFs have `pages` pages; a Parquet page image is a one-page doc at `row`."""

    doc_id: str  # first 16 hex of sha256 of the file bytes (of the image bytes for Parquet rows)
    source: str  # as recorded in shards: path relative to the input root, `file.parquet#row` for rows
    path: str  # where a worker reads it
    kind: str  # pdf | parquet | image
    pages: int
    row_group: int = -1
    row_in_group: int = -1
    queries: list[str] = field(default_factory=list)  # Parquet rows carry their own queries (page 0)


@dataclass
class Reject:
    source: str
    reason: str
    page: int | None = None  # a single page that failed, when the rest of the document is kept


def doc_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def escape_name(name: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def reject_unencodable(items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[Reject]]:
    """(items whose names are valid UTF-8, rejects for the others with the name escaped): a name that cannot be
    written into a JSON record or the manifest must not stop the job."""
    ok, bad = [], []
    for source, path in items:
        try:
            source.encode("utf-8")
            ok.append((source, path))
        except UnicodeEncodeError:
            bad.append(Reject(escape_name(source), "file name is not valid UTF-8"))
    return ok, bad


def discover(input_path: str, queries_path: str | None) -> tuple[list[tuple[str, str]], Path | None]:
    """Return [(source, absolute path)] in sorted order and the queries file to use (or None).

    A directory is walked for every file (hidden files and the queries file skipped; non-PDFs are later
    rejected, `.parquet` files read as page-image sets); a list file names one path per line, relative
    paths resolved against the list file's folder; a `.parquet` file is a page-image set.
    """
    root = Path(input_path).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"render.input {input_path} does not exist")
    if queries_path is None and root.is_dir() and (root / "queries.jsonl").is_file():
        queries_path = str(root / "queries.jsonl")
    qfile = Path(queries_path).expanduser().resolve() if queries_path else None
    if root.is_dir():
        files = [p for p in root.rglob("*") if p.is_file() and p != qfile
                 and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        items = [(p.relative_to(root).as_posix(), str(p)) for p in files]
    elif root.suffix.lower() in LIST_SUFFIXES:
        lines = [ln.strip() for ln in root.read_text().splitlines()]
        items = [(ln, str((root.parent / ln).resolve())) for ln in lines if ln and not ln.startswith("#")]
    else:
        items = [(root.name, str(root))]
    return sorted(set(items)), qfile


def probe_pdf(source: str, path: str, max_bytes: int) -> Doc | Reject:
    """Accept a readable, complete, unencrypted PDF (with its page count) or reject it with a reason."""
    import pypdfium2 as pdfium

    p = Path(path)
    if not p.is_file():
        return Reject(source, "missing file")
    size = p.stat().st_size
    if size == 0:
        return Reject(source, "zero-byte file")
    if size > max_bytes:
        return Reject(source, f"oversized: {size / 2**20:.1f} MiB > render.max_file_mb={max_bytes / 2**20:g}")
    data = p.read_bytes()
    if b"%PDF-" not in data[:1024]:
        return Reject(source, f"not a PDF: starts with {data[:8]!r}")
    if b"%%EOF" not in data[-1024:]:
        return Reject(source, "truncated: no %%EOF trailer at the end of the file")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        code = getattr(e, "err_code", None)
        if code in (pdfium.raw.FPDF_ERR_PASSWORD, pdfium.raw.FPDF_ERR_SECURITY):
            return Reject(source, "encrypted: needs a password")
        return Reject(source, f"unreadable: {e}")
    try:
        n = len(pdf)
    finally:
        pdf.close()
    if n == 0:
        return Reject(source, "no pages")
    return Doc(doc_id=doc_id_of(data), source=source, path=str(p), kind="pdf", pages=n)


def probe_image(source: str, path: str, max_bytes: int) -> Doc | Reject:
    """Accept a page image file that PIL can decode as a one-page document, or reject it with a reason."""
    from PIL import Image

    p = Path(path)
    size = p.stat().st_size if p.is_file() else -1
    if size <= 0:
        return Reject(source, "zero-byte file" if size == 0 else "missing file")
    if size > max_bytes:
        return Reject(source, f"oversized: {size / 2**20:.1f} MiB > render.max_file_mb={max_bytes / 2**20:g}")
    data = p.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as e:  # PIL raises many types for a bad or truncated image
        return Reject(source, f"unreadable image: {type(e).__name__}: {e}")
    return Doc(doc_id=doc_id_of(data), source=source, path=str(p), kind="image", pages=1)


def _image_column(schema) -> str | None:
    import pyarrow as pa

    names = list(schema.names)
    if "image" in names:
        return "image"
    for f in schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            return f.name
        if pa.types.is_struct(f.type) and any(sub.name == "bytes" for sub in f.type):
            return f.name
    return None


def _image_bytes(cell) -> bytes | None:
    """A datasets-style image cell: {"bytes": ..., "path": ...} or raw bytes."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    return bytes(cell) if cell else None


def _row_queries(row: dict, columns: list[str]) -> list[str]:
    out: list[str] = []
    for c in columns:
        v = row.get(c)
        if isinstance(v, str) and v.strip():
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += [q for q in v if isinstance(q, str) and q.strip()]
    return out


def probe_parquet(source: str, path: str) -> list[Doc | Reject]:
    """One Doc per distinct page image of a Parquet set; rows repeating an image merge their queries.

    Columns: the image is `image` (a struct with `bytes`, or raw bytes) or the first such column;
    queries come from `query` (str) and/or `queries` (list of str) when present.
    """
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        return [Reject(source, f"unreadable Parquet: {e}")]
    img_col = _image_column(pf.schema_arrow)
    if img_col is None:
        return [Reject(source, "Parquet without an image column (struct with bytes, or binary)")]
    qcols = [c for c in ("query", "queries") if c in pf.schema_arrow.names]
    docs: dict[str, Doc] = {}
    out: list[Doc | Reject] = []
    row = 0
    for g in range(pf.num_row_groups):
        for i, rec in enumerate(pf.read_row_group(g, columns=[img_col, *qcols]).to_pylist()):
            data = _image_bytes(rec[img_col])
            if data is None:
                out.append(Reject(f"{source}#{row}", "empty image cell"))
            else:
                did = doc_id_of(data)
                if did not in docs:
                    docs[did] = Doc(did, f"{source}#{row}", path, "parquet", 1, g, i)
                docs[did].queries += _row_queries(rec, qcols)
            row += 1
    return list(docs.values()) + out


def probe_files(items: list[tuple[str, str]], max_bytes: int) -> list[dict]:
    """Probe a batch of (source, path); returns dicts ({"doc": ...} or {"reject": ...}) in input order."""
    out: list[dict] = []
    for source, path in items:
        suffix = Path(path).suffix.lower()
        if suffix == ".parquet":
            found = probe_parquet(source, path)
        else:
            found = [(probe_image if suffix in IMAGE_SUFFIXES else probe_pdf)(source, path, max_bytes)]
        out += [{"doc": asdict(x)} if isinstance(x, Doc) else {"reject": asdict(x)} for x in found]
    return out


def dedupe(docs: list[Doc]) -> tuple[list[Doc], list[Reject]]:
    """Keep the first document (in source order) of each doc_id; later copies are rejected as duplicates."""
    seen: dict[str, Doc] = {}
    rejects = []
    for d in sorted(docs, key=lambda d: d.source):
        if d.doc_id in seen:
            first = seen[d.doc_id]
            if d.kind == "parquet" and first.kind == "parquet":
                first.queries += d.queries
            rejects.append(Reject(d.source, f"duplicate of {first.source}"))
        else:
            seen[d.doc_id] = d
    return list(seen.values()), rejects


def load_queries(qfile: Path | None) -> list[dict]:
    """JSON lines {"doc": path|name|doc_id, "page": int (0-based), "query": str}."""
    if qfile is None:
        return []
    rows = []
    for n, line in enumerate(qfile.read_text().splitlines(), 1):
        if line.strip():
            rec = json.loads(line)
            if not {"doc", "page", "query"} <= rec.keys():
                raise ValueError(f"{qfile}:{n}: a query line needs doc, page and query")
            rows.append(rec)
    return rows


def attach_queries(docs: list[Doc], rows: list[dict]) -> tuple[dict[tuple[str, int], list[str]], int]:
    """Map (doc_id, page) -> queries; a line's doc matches a source path, a doc_id or a unique file name.

    Returns the map and the number of lines that matched no page.
    """
    by_name: dict[str, Doc | None] = {}
    index: dict[str, Doc] = {}
    for d in docs:
        index[d.source] = index[d.doc_id] = d
        name = Path(d.source).name
        by_name[name] = None if name in by_name else d  # None: ambiguous
    out: dict[tuple[str, int], list[str]] = {(d.doc_id, 0): list(d.queries) for d in docs if d.queries}
    unmatched = 0
    for rec in rows:
        d = index.get(str(rec["doc"])) or by_name.get(Path(str(rec["doc"])).name)
        page = rec["page"]
        if d is None or not isinstance(page, int) or not 0 <= page < d.pages:
            unmatched += 1
            continue
        out.setdefault((d.doc_id, page), []).append(str(rec["query"]))
    if unmatched:
        log.warning("%d query lines match no page of an accepted document", unmatched)
    return out, unmatched


def read_row_group_images(path: str, row_group: int) -> list[bytes | None]:
    """The image bytes of every row of one Parquet row group (worker side)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    col = _image_column(pf.schema_arrow)
    return [_image_bytes(v) for v in pf.read_row_group(row_group, columns=[col]).column(col).to_pylist()]


def input_fingerprint(docs: list[Doc], rejects: list[Reject], queries: dict) -> str:
    """sha256 of the accepted input list (source, id, pages), the rejects and the attached queries."""
    payload = {
        "docs": sorted((d.source, d.doc_id, d.pages) for d in docs),
        "rejects": sorted((r.source, r.reason, r.page if r.page is not None else -1) for r in rejects),
        "queries": sorted([f"{k[0]}:{k[1]}", v] for k, v in queries.items()),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

