"""An on-disk multi-vector index of pages at one registered variant, and top-k MaxSim search over it.

Layout of an index directory: `index.safetensors` with `vectors` [T, dim] (all pages' vectors, concatenated,
stored as float16) and `offsets` [P + 1] int64 (page i owns rows offsets[i]:offsets[i+1]); `index.json` with the
page keys, the model URI, registry version, budget and eval fingerprint of the variant that encoded them.
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
from pipeline.model.vectors import MultiVector

log = logging.getLogger(__name__)
STORE_DTYPE = torch.float16
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
    """vectors [T, dim] float16, offsets [P + 1] long, page keys [P], and where the vectors came from."""

    vectors: torch.Tensor
    offsets: torch.Tensor
    keys: list[str]
    info: dict

    def save(self, directory: str | Path) -> Path:
        """Write both files into a temporary sibling directory renamed over `directory` whole: a reader finds the
        complete old index or the complete new one, never the tensors of one and the keys of the other. A directory
        holding anything but an index is refused, never replaced."""
        out = Path(directory)
        if out.exists() and (not out.is_dir() or any(p.name not in FILES for p in out.iterdir())):
            raise ValueError(f"{out}: not an index directory (holds other files); give serve.index_dir a new or "
                             "index-only directory")
        with atomic_directory(out) as tmp:
            save_file({"vectors": self.vectors.contiguous(), "offsets": self.offsets}, str(tmp / FILES[0]))
            (tmp / FILES[1]).write_text(json.dumps({**self.info, "keys": self.keys}))
        return out

    @staticmethod
    def load(directory: str | Path) -> "Index":
        d = Path(directory)
        tensors = load_file(str(d / FILES[0]))
        info = json.loads((d / FILES[1]).read_text())
        keys = info.pop("keys")
        return Index(tensors["vectors"], tensors["offsets"], keys, info)

    def pages(self, start: int, stop: int) -> MultiVector:
        """Pages [start, stop) as a padded float32 MultiVector [stop - start, max n, dim] (one gather, no loop)."""
        stop = min(stop, len(self.keys))
        first, lengths = self.offsets[start:stop], self.offsets[start + 1 : stop + 1] - self.offsets[start:stop]
        n = max(int(lengths.max()), 1) if stop > start else 1
        slot = torch.arange(n)
        mask = slot[None, :] < lengths[:, None]  # [b, n]
        rows = (first[:, None] + slot[None, :]).clamp(max=max(len(self.vectors) - 1, 0))
        vectors = self.vectors[rows].float() * mask[..., None]
        return MultiVector(vectors, mask)

    def chunks(self, size: int = 512):
        for start in range(0, len(self.keys), size):
            yield self.pages(start, start + size)


def build_index(retriever, pages, info: dict, batch_size: int = 16, progress: bool = True) -> Index:
    """Encode `pages` (an iterable of EvalPage-like objects with .key and .image) at the retriever's default
    budget into an Index."""
    keys, parts, counts, batch = [], [], [0], []
    bar = tqdm(desc="index pages", unit="page", disable=not progress)

    def flush():
        for page, v in zip(batch, retriever.embed(pages=[p.image for p in batch], batch_size=batch_size)):
            keys.append(page.key)
            parts.append(v.to(STORE_DTYPE).cpu())
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
    dim = retriever.default_budget.dim
    vectors = torch.cat(parts) if parts else torch.zeros(0, dim, dtype=STORE_DTYPE)
    return Index(vectors, torch.tensor(counts, dtype=torch.long), keys, {**info, "dtype": "float16", "dim": dim})


@torch.no_grad()
def search(index: Index, query_vectors: list[torch.Tensor], k: int) -> list[list[tuple[str, float]]]:
    """Top-k (page key, MaxSim score) per query, best first: query_vectors [n_q, dim] each."""
    q = pad(query_vectors)
    scores, idx = topk_stream(q, index.chunks(), k)
    return [[(index.keys[i], s) for i, s in zip(ir, sr)] for ir, sr in zip(idx.tolist(), scores.tolist())]
