"""Vector precision, the fourth budget axis: how a page vector is stored and what it costs in bytes.

    fp16  each coordinate as float16                                       2 * dim bytes
    int8  symmetric per vector: q = round(v / s) in [-127, 127], s = max|v| / 127 stored as float16
                                                                           dim + 2 bytes
    bin   the sign of each coordinate, packed 8 per byte (bit 7 of byte 0 = coordinate 0); the page vector it
          stands for is +-1/sqrt(dim) (unit length), scored against float queries (asymmetric)
                                                                           ceil(dim / 8) bytes

`Codes` holds stored vectors of any leading shape; `Codes.dot` scores float queries against them straight from the
codes (a block at a time, never the whole index as floats); `Codes.dequantize` is the float reference it equals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.model.config import PRECISIONS
from pipeline.model.vectors import MultiVector

__all__ = ["PRECISIONS", "Codes", "StoredPages", "bytes_per_vector", "fake_quantize", "quantize"]

_BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # bit 7 first: coordinate 0 is the high bit of byte 0


def bytes_per_vector(dim: int, precision: str) -> int:
    """Exact stored bytes of one page vector of width `dim` at `precision` (int8 counts its float16 scale)."""
    if precision == "fp16":
        return 2 * dim
    if precision == "int8":
        return dim + 2
    if precision == "bin":
        return (dim + 7) // 8
    raise ValueError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")


@dataclass
class Codes:
    """Stored vectors [..., dim] at one precision: `data` float16 [..., dim] | int8 [..., dim] | uint8 packed sign
    bits [..., ceil(dim / 8)], and for int8 the float16 `scale` [..., 1]."""

    precision: str
    dim: int
    data: torch.Tensor
    scale: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (what a file of them holds, less its header)."""
        return self.data.nbytes + (self.scale.nbytes if self.scale is not None else 0)

    def index(self, rows) -> "Codes":
        """The codes at `rows` (any index into the leading dimensions: slice, tensor of row numbers, ...)."""
        return Codes(self.precision, self.dim, self.data[rows], None if self.scale is None else self.scale[rows])

    def dequantize(self) -> torch.Tensor:
        """The float32 vectors [..., dim] these codes stand for (the reference every score must equal)."""
        if self.precision == "fp16":
            return self.data.float()
        if self.precision == "int8":
            return self.data.float() * self.scale.float()
        return _signs(self.data, self.dim) / math.sqrt(self.dim)

    def dot(self, q: torch.Tensor) -> torch.Tensor:
        """Dot products of float queries q [M, dim] with every stored vector: [M, *leading] float32. Only these
        codes are widened (callers pass one block of an index at a time); int8 applies its scales after the GEMM,
        bin multiplies by the +-1 signs and divides by sqrt(dim) once."""
        lead = self.data.shape[:-1]
        q = q.float()
        if self.precision == "bin":
            sim = (q @ _signs(self.data, self.dim).reshape(-1, self.dim).T) / math.sqrt(self.dim)
        else:
            sim = q @ self.data.reshape(-1, self.dim).float().T
            if self.scale is not None:
                sim = sim * self.scale.reshape(1, -1).float()
        return sim.view(q.shape[0], *lead)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to store (safetensors): `codes`, and `scales` for int8."""
        out = {"codes": self.data.contiguous()}
        if self.scale is not None:
            out["scales"] = self.scale.contiguous()
        return out

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], precision: str, dim: int) -> "Codes":
        """Inverse of tensors(); the dtypes and widths must be what `precision` stores (else ValueError)."""
        data, scale = tensors["codes"], tensors.get("scales")
        want = {"fp16": (torch.float16, dim), "int8": (torch.int8, dim), "bin": (torch.uint8, (dim + 7) // 8)}
        dtype, width = want[precision]
        if data.dtype != dtype or data.shape[-1] != width or (precision == "int8") != (scale is not None):
            raise ValueError(f"stored codes {data.dtype} [..., {data.shape[-1]}] are not {precision} at dim {dim}")
        return Codes(precision, dim, data, scale)


def quantize(vectors: torch.Tensor, precision: str) -> Codes:
    """float vectors [..., dim] -> Codes at `precision`. int8: an all-zero vector gets scale 0; bin: a zero
    coordinate counts as positive."""
    dim = vectors.shape[-1]
    bytes_per_vector(dim, precision)  # names an unknown precision
    if precision == "fp16":
        return Codes(precision, dim, vectors.to(torch.float16))
    if precision == "int8":
        scale = (vectors.abs().amax(-1, keepdim=True) / 127).to(torch.float16)
        safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
        return Codes(precision, dim, torch.round(vectors.float() / safe).clamp(-127, 127).to(torch.int8), scale)
    bits = (vectors >= 0).to(torch.uint8)
    pad = (-dim) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    packed = (bits.view(*bits.shape[:-1], bits.shape[-1] // 8, 8) << _BIT_SHIFTS).sum(-1, dtype=torch.uint8)
    return Codes(precision, dim, packed)


_SIGNS = ((torch.arange(256, dtype=torch.uint8).unsqueeze(-1) >> _BIT_SHIFTS) & 1).float() * 2 - 1  # [256, 8]


def fake_quantize(vectors: torch.Tensor, precision: str) -> torch.Tensor:
    """Straight-through quantisation for training: the forward value is what the codes stand for
    (dequantize(quantize(v))), the gradient passes to `vectors` unchanged."""
    with torch.no_grad():
        error = quantize(vectors, precision).dequantize().to(vectors.dtype) - vectors
    return vectors + error


def _signs(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """Packed sign bits [..., ceil(dim / 8)] -> float32 +-1 [..., dim] (one table lookup per byte)."""
    signs = _SIGNS.to(packed.device).index_select(0, packed.reshape(-1).int())
    return signs.view(*packed.shape[:-1], -1)[..., :dim]


@dataclass
class StoredPages:
    """A batch of pages as an index stores them: codes [B, Np, ...] at one precision and the mask [B, Np]."""

    codes: Codes
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.mask.shape[0]

    @staticmethod
    def of(pages: MultiVector, precision: str) -> "StoredPages":
        """Quantise every vector of `pages` (padding included: it stays masked)."""
        return StoredPages(quantize(pages.vectors, precision), pages.mask)

    def slice(self, start: int, stop: int) -> "StoredPages":
        return StoredPages(self.codes.index(slice(start, stop)), self.mask[start:stop])

    def to(self, device: torch.device | str) -> "StoredPages":
        c = self.codes
        scale = None if c.scale is None else c.scale.to(device)
        return StoredPages(Codes(c.precision, c.dim, c.data.to(device), scale), self.mask.to(device))

    def dequantize(self) -> MultiVector:
        """The float32 pages the codes stand for (the reference)."""
        return MultiVector(self.codes.dequantize(), self.mask)
