"""Run in a fresh process: load each variant directory alone, encode pages and queries, save the vectors.

    python tests/helpers/load_variant_worker.py PAGES_DIR OUT_DIR VARIANT_DIR...   (writes OUT_DIR/<variant name>.safetensors)
Also records which heavy modules got imported: DeepSpeed and the training code (anything of pipeline.train but
its config section) must not be, by the variant or by the evaluation/export/serving modules."""

import sys
from pathlib import Path

from PIL import Image
from safetensors.torch import save_file

import pipeline.evaluate.__main__  # noqa: F401  (the eval, export and serving code paths, for the import check)
import pipeline.evaluate.data  # noqa: F401
import pipeline.evaluate.grid  # noqa: F401
import pipeline.export.__main__  # noqa: F401
import pipeline.serve.index  # noqa: F401
from pipeline.export.variants import load_variant

pages_dir, out_dir, *variant_dirs = sys.argv[1:]
images = [Image.open(p).convert("RGB") for p in sorted(Path(pages_dir).glob("*.png"))]
for variant_dir in variant_dirs:
    retriever, card = load_variant(variant_dir)
    pages = retriever.embed(pages=images)
    queries = retriever.embed(queries=["ABC", "find the code XYZ"])
    tensors = {f"page{i}": v.contiguous() for i, v in enumerate(pages)}
    tensors.update({f"query{i}": v.contiguous() for i, v in enumerate(queries)})
    # The config tree holds training's section (pipeline.train.config: plain dataclasses), nothing else of training.
    imported = sorted(m for m in sys.modules if m in ("deepspeed", "pipeline.data.stream")
                      or (m.startswith("pipeline.train.") and m != "pipeline.train.config"))
    meta = {"imported": ",".join(imported), "layers": str(retriever.num_layers)}
    save_file(tensors, str(Path(out_dir) / f"{Path(variant_dir).name}.safetensors"), metadata=meta)
