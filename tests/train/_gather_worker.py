"""Worker for test_dist: each rank gathers a leaf of its own token length and back-propagates a rank-specific loss."""

import json
import sys

import torch

from pipeline.train import dist


def main(out_path: str, grad: bool) -> None:
    dist.init()
    r = dist.rank()
    x = torch.arange(2 * (2 + r) * 3, dtype=torch.float32).reshape(2, 2 + r, 3).add(10 * r).requires_grad_()
    g = dist.gather_padded(x, pad_dims=2, grad=grad)  # [4, 3, 3]
    # A permuted (non-contiguous) coefficient makes the incoming gradient non-contiguous, as einsum/amax do.
    coef = torch.arange(g.numel(), dtype=torch.float32).reshape(3, 3, 4).permute(2, 0, 1) * (r + 1)
    (g * coef).sum().backward()
    flag = dist.any_rank(r == 1)
    json.dump({"gathered": g.detach().tolist(), "grad": x.grad.tolist(), "any": flag}, open(f"{out_path}.{r}", "w"))
    dist.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "1")
