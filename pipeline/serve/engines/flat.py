"""The flat exact index: every page's codes at every stored budget in one safetensors file, scored by brute-force
MaxSim from the codes (pipeline/model/precision.py). It is the oracle the Qdrant engine is tested against, and an
engine of its own for small collections (`serve.engine: flat`).

A collection directory holds `flat.safetensors` (per budget `<budget>.codes`, `<budget>.scales` for int8 and
`<budget>.offsets` [P + 1]: page i owns rows offsets[i]:offsets[i+1]) and `collection.json` (info, budgets, page
keys and payloads, the content fingerprint, and the sha256 of the tensor file), written last. Opening verifies the
sha256, the structure (offsets from 0, monotonic, covering the codes; counts; finite codes) and the content
fingerprint (every page's codes and key) before anything is scored: a tampered or corrupt index is one line,
never another ranking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.layout.files import atomic_write, sha256_file
from pipeline.model.budgets import Budget
from pipeline.model.maxsim import maxsim, topk_stream
from pipeline.model.precision import Codes, StoredPages, quantize
from pipeline.model.vectors import MultiVector
from pipeline.serve.engines.base import MOD, Hit, Page, Stage, check_stages, page_digest

TENSORS, META = "flat.safetensors", "collection.json"
CHUNK = 512  # pages scored at once by the first stage


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
class Shelf:
    """One budget's codes for every page: codes [T, ...] and offsets [P + 1] (long)."""

    codes: Codes
    offsets: torch.Tensor

    @staticmethod
    def of(parts: list[Codes], budget: Budget) -> "Shelf":
        counts = torch.tensor([0] + [c.data.shape[0] for c in parts], dtype=torch.long)
        if not parts:
            return Shelf(quantize(torch.zeros(0, budget.dim), budget.precision), counts)
        scale = torch.cat([c.scale for c in parts]) if parts[0].scale is not None else None
        return Shelf(Codes(budget.precision, budget.dim, torch.cat([c.data for c in parts]), scale), counts.cumsum(0))

    def page(self, i: int) -> Codes:
        return self.codes.index(slice(int(self.offsets[i]), int(self.offsets[i + 1])))

    def pages(self, rows: torch.Tensor) -> StoredPages:
        """Pages `rows` [b] as padded codes [b, max n, ...] with their mask (one gather, no loop)."""
        first, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        n = max(int(lengths.max()), 1) if len(rows) else 1
        slot = torch.arange(n)
        mask = slot[None, :] < lengths[:, None]
        idx = (first[:, None] + slot[None, :]).clamp(max=max(self.codes.data.shape[0] - 1, 0))
        return StoredPages(self.codes.index(idx), mask)

    def check(self, pages: int, name: str) -> None:
        """ValueError unless the offsets cover `pages` pages of these codes in order and every code is finite."""
        o, rows = self.offsets, self.codes.data.shape[0]
        if o.dtype != torch.long or o.numel() != pages + 1 or int(o[0]) != 0 or int(o[-1]) != rows:
            raise ValueError(f"{name}: offsets do not cover {pages} pages and {rows} vectors")
        if bool((o[1:] < o[:-1]).any()):
            raise ValueError(f"{name}: offsets are not monotonic")
        floats = [t for t in (self.codes.data, self.codes.scale) if t is not None and t.is_floating_point()]
        if any(not bool(torch.isfinite(t).all()) for t in floats):
            raise ValueError(f"{name}: codes that are not finite numbers")


class FlatEngine:
    """The flat exact collection in `directory` (see the module docstring)."""

    def __init__(self, directory: Path, budgets: list[Budget], info: dict, keys: list[str], payloads: list[dict],
                 shelves: dict[Budget, Shelf], fingerprint: int):
        self.directory, self.budgets, self.info = Path(directory), budgets, info
        self.keys, self.payloads, self.shelves, self.fingerprint = keys, payloads, shelves, fingerprint

    # ---- create / open / save ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str | Path, budgets: list[Budget], info: dict) -> "FlatEngine":
        engine = cls(Path(directory), list(budgets), dict(info), [], [], {b: Shelf.of([], b) for b in budgets}, 0)
        engine.save()
        return engine

    @classmethod
    def open(cls, directory: str | Path) -> "FlatEngine":
        """The collection in `directory`, verified (ValueError, one line naming the file, when it is not whole)."""
        d = Path(directory)
        meta_path, tensors_path = d / META, d / TENSORS
        if not meta_path.is_file() or not tensors_path.is_file():
            raise ValueError(f"{d}: no flat index here ({TENSORS} and {META})")
        try:
            meta = json.loads(meta_path.read_text())
            budgets = [Budget.parse(b) for b in meta["budgets"]]
            keys, payloads, sha = list(meta["keys"]), list(meta["payloads"]), meta["sha256"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta_path}: not a readable index header ({type(e).__name__}: {e})") from None
        if sha256_file(tensors_path) != sha:
            raise ValueError(f"{tensors_path}: content does not match its sha256 in {META} (changed or corrupt)")
        try:
            tensors = load_file(str(tensors_path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{tensors_path}: not a safetensors file ({e})") from None
        if len(keys) != len(payloads) or len(set(keys)) != len(keys):
            raise ValueError(f"{meta_path}: {len(keys)} keys ({len(set(keys))} distinct) for {len(payloads)} pages")
        shelves = {}
        for b in budgets:
            try:
                part = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == str(b)}
                shelves[b] = Shelf(Codes.from_tensors(part, b.precision, b.dim), part["offsets"])
            except (KeyError, ValueError) as e:
                raise ValueError(f"{tensors_path}: budget {b}: {e}") from None
            shelves[b].check(len(keys), f"{tensors_path}: budget {b}")
        engine = cls(d, budgets, meta["info"], keys, payloads, shelves, int(meta["fingerprint"], 16))
        engine.verify()  # rows permuted or keys swapped keep the structure: the content digests do not
        return engine

    def save(self) -> None:
        """Write the tensors, then the header naming their sha256 (a reader finds the old index or the new one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for b, shelf in self.shelves.items():
            tensors.update({f"{b}/{k}": v for k, v in shelf.codes.tensors().items()})
            tensors[f"{b}/offsets"] = shelf.offsets
        tmp = self.directory / f".{TENSORS}.tmp"
        save_file(tensors, str(tmp))
        sha = sha256_file(tmp)
        tmp.replace(self.directory / TENSORS)
        meta = {"info": self.info, "budgets": [str(b) for b in self.budgets], "keys": self.keys,
                "payloads": self.payloads, "fingerprint": f"{self.fingerprint:064x}", "sha256": sha}
        atomic_write(self.directory / META, json.dumps(meta))

    # ---- updates ------------------------------------------------------------------------------------------------
    def _digest(self, key: str, codes: dict[Budget, Codes]) -> int:
        stored = {str(b): c.data.numpy().tobytes() + (b"" if c.scale is None else c.scale.numpy().tobytes())
                  for b, c in codes.items()}
        return page_digest(key, self.info.get("version"), stored)

    def _page_codes(self, i: int) -> dict[Budget, Codes]:
        return {b: s.page(i) for b, s in self.shelves.items()}

    def _rebuild(self, keep: list[int], new: list[tuple[str, dict, dict[Budget, Codes]]]) -> None:
        pages = [(self.keys[i], self.payloads[i], self._page_codes(i)) for i in keep] + new
        self.keys = [k for k, _, _ in pages]
        self.payloads = [p for _, p, _ in pages]
        self.shelves = {b: Shelf.of([c[b] for _, _, c in pages], b) for b in self.budgets}
        self.save()

    def upsert(self, pages: list[Page]) -> None:
        """Add pages, replacing any with the same key (its old content leaves the fingerprint)."""
        new, replaced = {}, set()
        index = {k: i for i, k in enumerate(self.keys)}
        for p in pages:
            codes = {b: quantize(p.vectors[b].float(), b.precision) for b in self.budgets}
            if p.key in index and p.key not in replaced:
                replaced.add(p.key)
                self.fingerprint = (self.fingerprint - self._digest(p.key, self._page_codes(index[p.key]))) % MOD
            elif p.key in new:
                self.fingerprint = (self.fingerprint - self._digest(p.key, new[p.key][2])) % MOD
            new[p.key] = (p.key, p.payload(), codes)
            self.fingerprint = (self.fingerprint + self._digest(p.key, codes)) % MOD
        self._rebuild([i for i, k in enumerate(self.keys) if k not in new], list(new.values()))

    def delete_documents(self, docs: list[str]) -> int:
        """Remove every page of `docs`; returns how many pages went."""
        gone = [i for i, p in enumerate(self.payloads) if p["doc"] in set(docs)]
        for i in gone:
            self.fingerprint = (self.fingerprint - self._digest(self.keys[i], self._page_codes(i))) % MOD
        if gone:
            self._rebuild([i for i in range(len(self.keys)) if i not in set(gone)], [])
        return len(gone)

    # ---- reading -----------------------------------------------------------------------------------------------
    def count(self) -> int:
        return len(self.keys)

    def verify(self) -> None:
        """ValueError unless the stored codes add up to the recorded content fingerprint."""
        total = sum(self._digest(k, self._page_codes(i)) for i, k in enumerate(self.keys)) % MOD
        if total != self.fingerprint:
            raise ValueError(f"{self.directory}: stored vectors do not match the collection's content fingerprint")

    @torch.no_grad()
    def search(self, queries: list[dict[Budget, torch.Tensor]], stages: list[Stage]) -> list[list[Hit]]:
        """Per query the last stage's pages, best first: the first stage scores every page, each later one the
        previous stage's pages (exact MaxSim from the codes)."""
        check_stages(stages, self.budgets)
        (first, limit), rest = stages[0], stages[1:]
        shelf = self.shelves[first]
        chunks = (shelf.pages(torch.arange(s, min(s + CHUNK, self.count()))) for s in range(0, self.count(), CHUNK))
        scores, rows = topk_stream(pad([q[first] for q in queries]), chunks, limit)
        out = []
        for qi, query in enumerate(queries):
            s, r = scores[qi], rows[qi]
            for budget, keep in rest:
                s = maxsim(pad([query[budget]]), self.shelves[budget].pages(r))[0]
                s, order = s.topk(min(keep, len(r)))
                r = r[order]
            out.append([Hit(self.keys[i], float(v), self.payloads[i]) for v, i in zip(s.tolist(), r.tolist())])
        return out

    def finish(self) -> None:
        """Nothing to build after a bulk load (every upsert saves)."""

    def close(self) -> None:
        """Nothing to release (the collection lives in memory and on disk)."""
