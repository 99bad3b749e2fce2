"""Worker for test_dist: each rank exchanges pages of its own token length at two exits, back-propagates a
rank-specific loss through the exchange, and reports the flags all-reduce."""

import json
import sys

import torch

from pipeline.model.vectors import MultiVector
from pipeline.train import dist
from pipeline.train.step import gather_pages


def local_pages(r: int) -> dict[int, MultiVector]:
    """Rank r: 2 pages of 2 + r vector slots, page 1 has one slot of padding; exits 1 and 2 (exit 2 = 100 + exit 1)."""
    x = torch.arange(2 * (2 + r) * 3, dtype=torch.float32).reshape(2, 2 + r, 3).add(10 * r)
    mask = torch.ones(2, 2 + r, dtype=torch.bool)
    mask[1, -1] = False
    grids = torch.tensor([[1, 2 + r], [1, 1 + r]])
    return {e: MultiVector((x + 100 * (e - 1)).requires_grad_(), mask, grids) for e in (1, 2)}


def main(out_path: str, grad: bool) -> None:
    dist.init()
    r = dist.rank()
    pages = local_pages(r)
    g = gather_pages(pages, grad=grad)  # {exit: [4, 3, 3]}
    # A permuted (non-contiguous) coefficient makes the incoming gradient non-contiguous, as einsum/amax do.
    coef = torch.arange(4 * 3 * 3, dtype=torch.float32).reshape(3, 3, 4).permute(2, 0, 1) * (r + 1)
    sum((g[e].vectors * coef * e).sum() for e in g).backward()
    flags = dist.any_ranks(r == 1, False, torch.tensor(r == 0))
    json.dump({"vectors": {e: g[e].vectors.detach().tolist() for e in g}, "mask": g[1].mask.tolist(),
               "grids": g[1].grids.tolist(), "grad": {e: pages[e].vectors.grad.tolist() for e in pages},
               "flags": flags}, open(f"{out_path}.{r}", "w"))
    dist.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "1")
