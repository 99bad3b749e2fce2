"""Worker side of the render job: page jobs -> encoded images plus JSON records (run inside Ray tasks).

A page job is a plain dict naming one page (`kind` pdf or parquet); `render_pages` opens each PDF
once per task, renders with pypdfium2 at `dpi` lowered to fit `max_pixels`, encodes PNG (lossless)
or JPEG, and extracts the text layer. Output bytes are a pure function of the job and the settings.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from data_prep.sources import read_row_group_images

EXT = {"png": "png", "jpeg": "jpg"}


def render_settings(cfg: Any) -> dict:
    """The settings (and library versions) that decide the shard bytes; stored in the manifest."""
    import PIL
    import pypdfium2.version as pv

    settings = {
        "dpi": cfg.dpi, "max_pixels": cfg.max_pixels, "image_format": cfg.image_format,
        "shard_size": cfg.shard_size, "eval_fraction": cfg.eval_fraction, "split_seed": cfg.split_seed,
        "max_file_mb": cfg.max_file_mb, "split_by": cfg.split_by,
        "renderer": {"pypdfium2": str(pv.PYPDFIUM_INFO), "pdfium": str(pv.PDFIUM_INFO), "pillow": PIL.__version__},
    }
    if cfg.image_format == "jpeg":
        settings["jpeg_quality"] = cfg.jpeg_quality
    else:
        settings["png_compress_level"] = cfg.png_compress_level
    return settings


def page_scale(width_pt: float, height_pt: float, dpi: float, max_pixels: int) -> float:
    """Scale (pixels per point) for `dpi`, lowered so the rendered page has at most `max_pixels` pixels."""
    scale = dpi / 72.0
    # pdfium rounds each side up: budget for the rounding so the cap holds exactly.
    while math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels and scale > 1e-3:
        scale = min(scale * 0.999, math.sqrt(max_pixels / (width_pt * height_pt)) * 0.999)
    return scale


def encode(img, settings: dict) -> bytes:
    """PIL image -> PNG (lossless, fixed zlib level) or JPEG (fixed quality) bytes."""
    buf = io.BytesIO()
    if settings["image_format"] == "png":
        img.save(buf, format="PNG", compress_level=settings["png_compress_level"])
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=settings["jpeg_quality"])
    return buf.getvalue()


def record_bytes(job: dict, width: int, height: int, dpi: float | None, text: str) -> bytes:
    """The sample's JSON member (docs/interfaces.md), serialised deterministically."""
    rec = {"doc_id": job["doc_id"], "source": job["source"], "page": job["page"], "width": width, "height": height,
           "dpi": dpi, "text": text, "queries": job["queries"], "split": job["split"], "num_pages": job["num_pages"]}
    return json.dumps(rec, sort_keys=True, ensure_ascii=False).encode()


def _render_pdf_page(pdf, job: dict, settings: dict) -> dict:
    page = pdf[job["page"]]
    try:
        w, h = page.get_size()
        scale = page_scale(w, h, settings["dpi"], settings["max_pixels"])
        img = page.render(scale=scale).to_pil()
        textpage = page.get_textpage()
        text = textpage.get_text_range().replace("\r\n", "\n")
        textpage.close()
    finally:
        page.close()
    dpi = round(scale * 72.0, 3)
    dpi = int(dpi) if dpi == int(dpi) else dpi
    return {"key": job["key"], "image": encode(img, settings), "json": record_bytes(job, img.width, img.height, dpi, text)}


def _fit_image(data: bytes, settings: dict) -> tuple[bytes, int, int]:
    """A dataset's page image, passed through when already in the target format and within the pixel cap."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    fmt = {"PNG": "png", "JPEG": "jpeg"}.get(img.format or "")
    if fmt == settings["image_format"] and img.width * img.height <= settings["max_pixels"]:
        return data, img.width, img.height
    img.load()
    if img.width * img.height > settings["max_pixels"]:
        s = math.sqrt(settings["max_pixels"] / (img.width * img.height))
        img = img.convert("RGB").resize((max(1, int(img.width * s)), max(1, int(img.height * s))), Image.LANCZOS)
    return encode(img.convert("RGB"), settings), img.width, img.height


def render_pages(jobs: list[dict], settings: dict) -> list[dict]:
    """Render a list of page jobs; each result is {"key", "image", "json"} or {"key", "error"} (in job order)."""
    import pypdfium2 as pdfium

    out: list[dict] = []
    open_pdf: tuple[str, Any] = ("", None)
    rows: tuple[tuple[str, int], list] = (("", -1), [])
    for job in jobs:
        try:
            if job["kind"] == "pdf":
                if open_pdf[0] != job["path"]:
                    if open_pdf[1] is not None:
                        open_pdf[1].close()
                    open_pdf = (job["path"], pdfium.PdfDocument(job["path"]))
                out.append(_render_pdf_page(open_pdf[1], job, settings))
            elif job["kind"] == "image":
                with open(job["path"], "rb") as f:
                    data, w, h = _fit_image(f.read(), settings)
                out.append({"key": job["key"], "image": data, "json": record_bytes(job, w, h, None, "")})
            else:
                where = (job["path"], job["row_group"])
                if rows[0] != where:
                    rows = (where, read_row_group_images(*where))
                data, w, h = _fit_image(rows[1][job["row_in_group"]] or b"", settings)
                out.append({"key": job["key"], "image": data, "json": record_bytes(job, w, h, None, "")})
        except Exception as e:  # one bad page never stops the job: it is reported as a reject
            out.append({"key": job["key"], "error": f"{type(e).__name__}: {e}"})
    if open_pdf[1] is not None:
        open_pdf[1].close()
    return out
