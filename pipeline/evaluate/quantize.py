"""Index storage at a dtype: the vectors a stored index gives back, and what each stored vector costs in bytes.

float16/bfloat16 round each coordinate; int8 is symmetric per vector: q = round(v / s) in [-127, 127] with
s = max|v| / 127 stored as float16 beside the vector (2 more bytes per vector).
"""

from __future__ import annotations

import torch

HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}
SCALE_BYTES = {"int8": 2}  # a float16 scale per stored vector


def quantize_int8(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., D] float -> (int8 [..., D], float16 scale [..., 1]); an all-zero vector gets scale 0."""
    scale = (vectors.abs().amax(-1, keepdim=True) / 127).to(torch.float16)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    return torch.round(vectors / safe).clamp(-127, 127).to(torch.int8), scale


def stored(vectors: torch.Tensor, dtype: str) -> torch.Tensor:
    """`vectors` as read back from an index stored at `dtype` (float32 out)."""
    if dtype in HALF:
        return vectors.to(HALF[dtype]).float()
    if dtype == "int8":
        q, scale = quantize_int8(vectors)
        return q.float() * scale.float()
    return vectors.float()
