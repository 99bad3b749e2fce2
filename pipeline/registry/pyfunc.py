"""The MLflow pyfunc of a budget variant: predict encodes query texts or base64 page images into vectors.

Input: a DataFrame with columns `query` (text) and `image` (base64 PNG/JPEG bytes); each row fills exactly one.
Output: one record per row, {"kind": "query" | "page", "vectors": [[...], ...]} with the row's vectors at the
variant's budget ([n_i, dim], pages pooled), float32 values.
"""

from __future__ import annotations

import base64
import io

import mlflow.pyfunc
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "query", required=False),
                                          ColSpec("string", "image", required=False)]))
ARTIFACT = "variant"


def decode_image(b64: str):
    """base64 image bytes -> RGB PIL image."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        return img.convert("RGB")


def encode_image(image, fmt: str = "PNG") -> str:
    """PIL image -> base64 text of its PNG bytes (what a client sends)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def _filled(v) -> bool:
    return isinstance(v, str) and v != ""


class VariantModel(mlflow.pyfunc.PythonModel):
    """Loads the variant directory logged as the `variant` artifact; encodes at the variant's default budget."""

    def load_context(self, context):
        from pipeline.export.variants import load_variant

        self.retriever, self.card = load_variant(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        kinds, texts, images = [], [], []
        for i, row in enumerate(rows):
            q, img = row.get("query"), row.get("image")
            if _filled(q) == _filled(img):
                raise ValueError(f"row {i}: give exactly one of 'query' or 'image'")
            kinds.append("query" if _filled(q) else "page")
            (texts if _filled(q) else images).append(q if _filled(q) else decode_image(img))
        qv = iter(self.retriever.embed(queries=texts) if texts else [])
        pv = iter(self.retriever.embed(pages=images) if images else [])
        out = []
        for kind in kinds:
            v = next(qv) if kind == "query" else next(pv)
            out.append({"kind": kind, "vectors": v.float().cpu().tolist()})
        return out
