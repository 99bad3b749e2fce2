"""The MLflow pyfunc of a budget variant: predict encodes query texts or base64 page images into vectors.

Input: a DataFrame with columns `query` (text) and `image` (base64 PNG/JPEG bytes); each row fills exactly one.
Output: one record per row, {"kind": "query" | "page", "vectors": [[...], ...]} with the row's vectors at the
variant's budget ([n_i, dim], pages pooled), float32 values before storage (an index stores pages at the variant's
precision: `python -m pipeline.serve index`). A request that does not fit raises RequestError
with one line for the client (what is wrong, which row); `check_rows` is shared with the HTTP server's guard.
"""

from __future__ import annotations

import base64
import binascii
import io

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, Schema

COLUMNS = ("query", "image")
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "query", required=False),
                                          ColSpec("string", "image", required=False)]))
ARTIFACT = "variant"


class RequestError(MlflowException):
    """A request the model cannot answer; the message is one line for the client (HTTP 400)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def decode_image(b64: str):
    """base64 image bytes -> RGB PIL image."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64, validate=True))) as img:
        return img.convert("RGB")


def encode_image(image, fmt: str = "PNG") -> str:
    """PIL image -> base64 text of its PNG bytes (what a client sends)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def _filled(v) -> bool:
    return isinstance(v, str) and v != ""


def check_rows(records: list[dict]) -> list[str]:
    """The kind ("query" or "page") of each request row; RequestError (one line) for a row or column that does
    not fit: an unknown column, both or neither of query/image, no rows at all."""
    if not records:
        raise RequestError("no rows: send at least one row with a 'query' (text) or an 'image' (base64 PNG/JPEG)")
    unknown = sorted({str(k) for r in records for k in r} - set(COLUMNS))
    if unknown:
        raise RequestError(f"unknown column {', '.join(map(repr, unknown))}: the columns are 'query' (text) and "
                           "'image' (base64 PNG/JPEG)")
    kinds = []
    for i, row in enumerate(records):
        q, img = _filled(row.get("query")), _filled(row.get("image"))
        if q == img:
            raise RequestError(f"row {i} has {'both' if q else 'neither'} 'query' and 'image': give exactly one")
        kinds.append("query" if q else "page")
    return kinds


def _images(rows: list[dict], kinds: list[str]) -> list:
    out = []
    for i, (row, kind) in enumerate(zip(rows, kinds)):
        if kind == "page":
            try:
                out.append(decode_image(row["image"]))
            except (binascii.Error, ValueError, OSError):
                raise RequestError(f"row {i}: 'image' is not a base64 PNG or JPEG") from None
    return out


class VariantModel(mlflow.pyfunc.PythonModel):
    """Loads the variant directory logged as the `variant` artifact; encodes at the variant's default budget."""

    def load_context(self, context):
        from pipeline.export.variants import load_variant

        self.retriever, self.card = load_variant(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        kinds = check_rows(rows)
        texts = [row["query"] for row, kind in zip(rows, kinds) if kind == "query"]
        images = _images(rows, kinds)
        qv = iter(self.retriever.embed(queries=texts) if texts else [])
        pv = iter(self.retriever.embed(pages=images) if images else [])
        out = []
        for kind in kinds:
            v = next(qv) if kind == "query" else next(pv)
            out.append({"kind": kind, "vectors": v.float().cpu().tolist()})
        return out
