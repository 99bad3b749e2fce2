"""An on-disk multi-vector index of pages at one registered variant, and top-k MaxSim search over it.

Layout of an index directory: `index.safetensors` with `codes` (all pages' vectors, concatenated, at the variant's
precision: float16 [T, dim], int8 [T, dim] with float16 `scales` [T, 1], or packed sign bits uint8
[T, ceil(dim / 8)]) and `offsets` [P + 1] int64 (page i owns rows offsets[i]:offsets[i+1]); `index.json` with
the precision, dim, the codes' bytes, the page keys, the model URI, registry version, budget and eval fingerprint
of the variant that encoded them. Search scores float queries against the codes a block of pages at a time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pipeline.layout.files import atomic_directory
from pipeline.model.maxsim import topk_stream
from pipeline.model.precision import Codes, StoredPages, quantize
from pipeline.model.vectors import MultiVector

log = logging.getLogger(__name__)
FILES = ("index.safetensors", "index.json")


def pad(items: list[torch.Tensor]) -> MultiVector:
    """Per-item vectors [n_i, D] -> MultiVector [B, max n_i, D] with its mask (float32)."""
    n = max((v.shape[0] for v in items), default=1) or 1
    d = items[0].shape[1] if items else 1
    vectors = torch.zeros(len(items), n, d)
    mask = torch.zeros(len(items), n, dtype=torch.bool)
    for i, v in enumerate(items):
        vectors[i, : v.shape[0]] = v.float()
        mask[i, : v.shape[0]] = True
    return MultiVector(vectors, mask)


@dataclass
class Index:
    """Every page's vectors as codes [T, ...] at one precision, offsets [P + 1] long, page keys [P], and where the
    vectors came from (info: model URI, version, budget, ...)."""

    codes: Codes
    offsets: torch.Tensor
    keys: list[str]
    info: dict

    def header(self) -> dict:
        """What index.json says about the stored vectors: precision, dim, vector count and the codes' bytes."""
        c = self.codes
        return {"precision": c.precision, "dim": c.dim, "vectors": int(c.data.shape[0]), "codes_bytes": c.nbytes}

    def save(self, directory: str | Path) -> Path:
        """Write both files into a temporary sibling directory renamed over `directory` whole: a reader finds the
        complete old index or the complete new one, never the tensors of one and the keys of the other. A directory
        holding anything but an index is refused, never replaced."""
        out = Path(directory)
        if out.exists() and (not out.is_dir() or any(p.name not in FILES for p in out.iterdir())):
            raise ValueError(f"{out}: not an index directory (holds other files); give serve.index_dir a new or "
                             "index-only directory")
        with atomic_directory(out) as tmp:
            save_file({**self.codes.tensors(), "offsets": self.offsets}, str(tmp / FILES[0]))
            (tmp / FILES[1]).write_text(json.dumps({**self.info, **self.header(), "keys": self.keys}))
        return out

    @staticmethod
    def load(directory: str | Path) -> "Index":
        """The index in `directory`; ValueError (one line) when there is none or its tensors are not what its
        header says."""
        d = Path(directory)
        if not all((d / f).is_file() for f in FILES):
            raise ValueError(f"{d}: no index here ({' and '.join(FILES)}): run `python -m pipeline.serve index`")
        tensors = load_file(str(d / FILES[0]))
        info = json.loads((d / FILES[1]).read_text())
        keys = info.pop("keys")
        if "codes" not in tensors or "dim" not in info:
            raise ValueError(f"{d}: an index of an earlier version (no codes): rebuild it with "
                             "`python -m pipeline.serve index`")
        codes = Codes.from_tensors(tensors, info.get("precision", "fp16"), int(info["dim"]))
        offsets = tensors["offsets"]
        if offsets.numel() != len(keys) + 1 or int(offsets[-1]) != codes.data.shape[0]:
            raise ValueError(f"{d}: offsets do not cover {len(keys)} pages and {codes.data.shape[0]} vectors")
        return Index(codes, offsets, keys, info)

    def pages(self, start: int, stop: int) -> StoredPages:
        """Pages [start, stop) as padded codes [stop - start, max n, ...] with their mask (one gather, no loop)."""
        stop = min(stop, len(self.keys))
        first, lengths = self.offsets[start:stop], self.offsets[start + 1 : stop + 1] - self.offsets[start:stop]
        n = max(int(lengths.max()), 1) if stop > start else 1
        slot = torch.arange(n)
        mask = slot[None, :] < lengths[:, None]  # [b, n]
        rows = (first[:, None] + slot[None, :]).clamp(max=max(self.codes.data.shape[0] - 1, 0))
        return StoredPages(self.codes.index(rows), mask)

    def chunks(self, size: int = 512):
        for start in range(0, len(self.keys), size):
            yield self.pages(start, start + size)


def build_index(retriever, pages, info: dict, batch_size: int = 16, progress: bool = True) -> Index:
    """Encode `pages` (an iterable of EvalPage-like objects with .key and .image) at the retriever's default
    budget into an Index stored at that budget's precision."""
    keys, parts, counts, batch = [], [], [0], []
    bar = tqdm(desc="index pages", unit="page", disable=not progress)

    def flush():
        for page, v in zip(batch, retriever.embed(pages=[p.image for p in batch], batch_size=batch_size)):
            keys.append(page.key)
            parts.append(v.float().cpu())
            counts.append(counts[-1] + v.shape[0])
        bar.update(len(batch))
        batch.clear()

    for page in pages:
        batch.append(page)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    budget = retriever.default_budget
    vectors = torch.cat(parts) if parts else torch.zeros(0, budget.dim)
    return Index(quantize(vectors, budget.precision), torch.tensor(counts, dtype=torch.long), keys, info)


@torch.no_grad()
def search(index: Index, query_vectors: list[torch.Tensor], k: int) -> list[list[tuple[str, float]]]:
    """Top-k (page key, MaxSim score) per query, best first: query_vectors [n_q, dim] each."""
    q = pad(query_vectors)
    scores, idx = topk_stream(q, index.chunks(), k)
    return [[(index.keys[i], s) for i, s in zip(ir, sr)] for ir, sr in zip(idx.tolist(), scores.tolist())]
