"""The index-scale benchmark's vectors: the trained model's, for rendered pages and their queries (encoded once, kept
in safetensors), and vectors drawn to match the model's statistics for the pages beyond the rendered corpus.

A vector file holds, per budget B, `B` = every page's (or query's) vectors one after another, float16 [T, dim], and
`B.offsets` = int64 [n + 1] (item i owns rows offsets[i]:offsets[i+1]); a JSON sidecar names the items.

Drawn pages: at each exit, a page's full-width vectors are v_j = normalise(m + r_j), where the page's mean m is drawn
from the Gaussian of the model's page means (mean, covariance) and each r_j from the Gaussian of the model's
residuals about the page mean (a mean per grid cell, one covariance); the other budgets at that exit are cut from
them by the model's own width cut and grid pooling (pipeline.model.pooling.apply_budget), so a drawn page vector
is the mean of that page's drawn vectors, as the model's is. Exits are drawn independently of each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.model.budgets import Budget
from pipeline.model.pooling import apply_budget, normalize
from pipeline.model.vectors import MultiVector

BLOCK_FLOATS = 1 << 20  # drawn values per generator seed: any page range is reproducible without drawing the rest


@dataclass
class VectorSet:
    """Items' vectors per budget: {budget: (vectors float16 [T, dim], offsets int64 [n + 1])}."""

    parts: dict[Budget, tuple[torch.Tensor, torch.Tensor]]
    keys: list[str]
    meta: list[dict] | None = None  # per item: what the shard's record says of the page (its query, its codes)

    def __len__(self) -> int:
        return len(self.keys)

    def item(self, i: int, budget: Budget) -> torch.Tensor:
        vectors, offsets = self.parts[budget]
        return vectors[int(offsets[i]): int(offsets[i + 1])]

    def items(self, budget: Budget, start: int, stop: int) -> list[torch.Tensor]:
        return [self.item(i, budget) for i in range(start, min(stop, len(self)))]

    def save(self, path: Path) -> None:
        tensors = {}
        for b, (v, o) in self.parts.items():
            tensors[str(b)], tensors[f"{b}.offsets"] = v.contiguous(), o.contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        path.with_suffix(".json").write_text(json.dumps({"keys": self.keys, "meta": self.meta}))

    @staticmethod
    def load(path: Path, budgets: list[Budget] | None = None) -> "VectorSet":
        tensors = load_file(str(path))
        side = json.loads(path.with_suffix(".json").read_text())
        names = [str(b) for b in budgets] if budgets else [k for k in tensors if not k.endswith(".offsets")]
        return VectorSet({Budget.parse(n): (tensors[n], tensors[f"{n}.offsets"]) for n in names}, side["keys"],
                         side.get("meta"))

    @staticmethod
    def of(items: list[dict[Budget, torch.Tensor]], keys: list[str], meta: list[dict] | None = None) -> "VectorSet":
        """From per-item {budget: [n_i, dim]} (what Retriever.embed_budgets returns)."""
        parts = {}
        for b in items[0]:
            counts = torch.tensor([0] + [it[b].shape[0] for it in items], dtype=torch.long)
            parts[b] = (torch.cat([it[b].half() for it in items]), counts.cumsum(0))
        return VectorSet(parts, keys, meta)

    @staticmethod
    def cat(sets: list["VectorSet"]) -> "VectorSet":
        parts = {}
        for b in sets[0].parts:
            vs, os_, base = [], [torch.zeros(1, dtype=torch.long)], 0
            for s in sets:
                v, o = s.parts[b]
                vs.append(v)
                os_.append(o[1:] + base)
                base += v.shape[0]
            parts[b] = (torch.cat(vs), torch.cat(os_))
        meta = [m for s in sets for m in s.meta] if all(s.meta for s in sets) else None
        return VectorSet(parts, [k for s in sets for k in s.keys], meta)


# ---- the model's vectors ----------------------------------------------------------------------------------------
def shard_pages(shard_dir: Path):
    """(key, record, image) of every page of a shard directory (all splits), each shard verified first."""
    from pipeline.data.reader import decode_image, read_shard
    from pipeline.serve.pages import shards_of

    for shard in shards_of(shard_dir, "all"):
        for sample in read_shard(shard):
            yield sample.key, sample.meta, decode_image(sample.image, shard.path, sample.key)


def encode_pages(model_dir: Path, shard_dir: Path, budgets: list[Budget], out_dir: Path, part_size: int = 10_000,
                 batch: int = 128, limit: int | None = None) -> VectorSet:
    """Every page of the shard directory (all splits) encoded once (one forward per batch, every budget cut from
    it), saved in parts of `part_size` pages under out_dir (parts already there are kept: a killed run resumes)."""
    import itertools

    from pipeline.model.retriever import Retriever

    torch.set_num_threads(1)  # one thread: on a shared 2-core machine two OpenMP threads spin against each other
    model = Retriever.from_pretrained(model_dir).eval()
    pages = shard_pages(shard_dir)
    if limit:
        pages = itertools.islice(pages, limit)
    parts, index = [], 0
    while True:
        path = out_dir / f"pages-{index:03d}.safetensors"
        chunk = list(itertools.islice(pages, part_size)) if not path.exists() else None
        if path.exists():
            parts.append(VectorSet.load(path))
            for _ in itertools.islice(pages, len(parts[-1])):  # skip the pages that part holds
                pass
        elif not chunk:
            break
        else:
            with torch.no_grad():
                vecs = model.embed_budgets(budgets, pages=[image for _, _, image in chunk], batch_size=batch)
            meta = [{"query": (m.get("queries") or [None])[0], "codes": m["text"].split()} for _, m, _ in chunk]
            parts.append(VectorSet.of(vecs, [key for key, _, _ in chunk], meta))
            parts[-1].save(path)
        index += 1
        if len(parts[-1]) < part_size:
            break
    return VectorSet.cat(parts)


def encode_queries(model_dir: Path, texts: list[str], budgets: list[Budget], path: Path) -> VectorSet:
    """The queries' vectors at every budget (queries are not pooled: a budget's pool does not change them)."""
    from pipeline.model.retriever import Retriever

    torch.set_num_threads(1)
    model = Retriever.from_pretrained(model_dir).eval()
    with torch.no_grad():
        vecs = model.embed_budgets(budgets, queries=texts, batch_size=64)
    out = VectorSet.of(vecs, texts)
    out.save(path)
    return out


# ---- drawn vectors ------------------------------------------------------------------------------------------------
@dataclass
class ExitStats:
    """The model's full-width vectors at one exit: page means ~ N(mean, page_cov); residuals about the page mean ~
    N(cell_mean[j], residual_cov) for grid cell j (cell_mean only for pages of the fitted vector count)."""

    mean: torch.Tensor  # [D]
    page_cov: torch.Tensor  # [D, D]
    cell_mean: torch.Tensor  # [n, D]
    residual_cov: torch.Tensor  # [D, D]

    @staticmethod
    def fit(vectors: torch.Tensor) -> "ExitStats":
        """vectors [P, n, D] (pages of n vectors each) -> the statistics (float64)."""
        v = vectors.double()
        means = v.mean(1)
        residuals = v - means[:, None]
        cell_mean = residuals.mean(0)
        flat = (residuals - cell_mean).reshape(-1, v.shape[-1])
        return ExitStats(means.mean(0), torch.cov(means.T), cell_mean, flat.T @ flat / max(flat.shape[0] - 1, 1))

    def as_dict(self) -> dict:
        return {"mean_norm": float(self.mean.norm()), "page_var": float(self.page_cov.trace()),
                "residual_var": float(self.residual_cov.trace())}


def _factor(cov: torch.Tensor) -> torch.Tensor:
    """A matrix L with L L^T = cov (eigen-decomposition: a covariance of fp16 data may be only semi-definite)."""
    w, q = torch.linalg.eigh(cov)
    return (q * w.clamp(min=0).sqrt()).float()


def draw_pages(stats: ExitStats, start: int, stop: int, count: int, seed: int) -> torch.Tensor:
    """Drawn full-width unit vectors of pages [start, stop), `count` each: [stop - start, count, D] float32,
    the same pages whatever range they are drawn in (one generator per block of pages)."""
    lp, lr = _factor(stats.page_cov), _factor(stats.residual_cov)
    dim = lp.shape[0]
    cells = stats.cell_mean.float() if stats.cell_mean.shape[0] == count else torch.zeros(count, dim)
    block = max(1, BLOCK_FLOATS // (count * dim))
    out = []
    for c in range(start // block, (stop - 1) // block + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)
        m = stats.mean.float() + torch.randn(block, dim, generator=g) @ lp.T
        r = torch.randn(block, count, dim, generator=g) @ lr.T
        lo, hi = max(start, c * block) - c * block, min(stop, (c + 1) * block) - c * block
        out.append(normalize(m[lo:hi, None] + cells + r[lo:hi]))
    return torch.cat(out)


def cut(full: torch.Tensor, grid: tuple[int, int], budget: Budget) -> list[torch.Tensor]:
    """Budget `budget` of pages' full-width vectors [P, n, D] on a rows x cols grid: per page [m, budget.dim]."""
    p, n, _ = full.shape
    mv = MultiVector(full, torch.ones(p, n, dtype=torch.bool), torch.tensor([grid] * p))
    out = apply_budget(mv, budget.dim, budget.pool)
    return list(out.vectors.unbind(0))


def fidelity(model_pages: torch.Tensor, drawn: torch.Tensor) -> dict:
    """How drawn pages [P, n, D] resemble the model's [P', n, D]: mean cosine between two vectors of one page, and
    between the page means of two pages (what the page level and MaxSim see)."""

    def stats(v: torch.Tensor) -> dict:
        v = v.float()
        within = (v @ v.transpose(1, 2)).mean().item() - 1.0 / v.shape[1]  # less the diagonal's share
        means = normalize(v.mean(1))
        across = (means @ means.T).mean().item()
        return {"within_page_cos": within * v.shape[1] / (v.shape[1] - 1), "across_pages_cos": across}

    return {"model": stats(model_pages[:2000]), "drawn": stats(drawn[:2000])}
