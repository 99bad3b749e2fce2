"""The multi-vector output of the retriever: padded vectors, a validity mask and (for pages) the patch grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MultiVector:
    """A batch of variable-length sets of L2-normalised vectors.

    vectors: [B, N, D] float, L2-normalised per vector (padding rows are arbitrary, masked out).
    mask:    [B, N] bool, True at real vectors.
    grids:   [B, 2] long (rows, cols of each page's merged patch grid; the first rows*cols vectors of a page
             are its cells in row-major order) or None for queries.
    """

    vectors: torch.Tensor
    mask: torch.Tensor
    grids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[-1]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "MultiVector":
        """Move vectors and mask (and grids) to `device`; optionally cast the vectors to `dtype`."""
        grids = None if self.grids is None else self.grids.to(device)
        return MultiVector(self.vectors.to(device, dtype=dtype), self.mask.to(device), grids)

    def slice(self, start: int, stop: int) -> "MultiVector":
        """Items [start, stop) of the batch."""
        grids = None if self.grids is None else self.grids[start:stop]
        return MultiVector(self.vectors[start:stop], self.mask[start:stop], grids)

    def detach(self) -> "MultiVector":
        return MultiVector(self.vectors.detach(), self.mask, self.grids)

    def unpad(self) -> list[torch.Tensor]:
        """Per item, the real vectors only: a list of B tensors [n_i, D] (one host sync for the mask)."""
        return [v[m] for v, m in zip(self.vectors, self.mask.to(self.vectors.device))]

    @staticmethod
    def cat(parts: list["MultiVector"]) -> "MultiVector":
        """Concatenate along the batch, padding N to the longest part: [sum B_i, max N_i, D]."""
        n = max(p.vectors.shape[1] for p in parts)
        vectors = torch.cat([torch.nn.functional.pad(p.vectors, (0, 0, 0, n - p.vectors.shape[1])) for p in parts])
        mask = torch.cat([torch.nn.functional.pad(p.mask, (0, n - p.mask.shape[1]), value=False) for p in parts])
        grids = None if parts[0].grids is None else torch.cat([p.grids for p in parts])
        return MultiVector(vectors, mask, grids)
