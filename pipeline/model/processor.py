"""Page images and query texts -> model inputs plus where the vectors sit (built here: no torchvision needed).

Pages become one vector per image token (row-major over the merged patch grid), queries one per text token. The
parts every family shares live here; each family's page layout lives in pipeline/model/families/<name>.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class EncoderInputs:
    """A padded batch for the backbone (right padding) plus where its output vectors sit.

    input_ids, attention_mask: [B, L]; vector_index [B, N] long: sequence positions that become vectors (padded
    with 0), vector_mask [B, N] bool; grids [B, 2] merged patch grid (pages) or None (queries);
    pixel_values: Qwen2-VL [sum_i patches_i, C*T*P*P] / PaliGemma [B, 3, H, W] / None;
    image_grid_thw [B, 3] (Qwen2-VL pages); token_type_ids [B, L] (Qwen2-VL: mm_token_type_ids, PaliGemma:
    token_type_ids) or None.
    Host-side sizes (plain ints, never moved to a device, so slicing a batch into chunks needs no device read):
    lengths [B] tokens per item, counts [B] vectors per item (the real vectors are the first counts[i]: the mask is
    a prefix), patches [B] Qwen2-VL pixel patches per image (empty otherwise).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    vector_index: torch.Tensor
    vector_mask: torch.Tensor
    grids: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    token_type_ids: torch.Tensor | None = None
    lengths: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    patches: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "EncoderInputs":
        """The tensors moved to `device` (the host-side sizes stay as they are)."""
        moved = {f.name: v.to(device) for f in dataclasses.fields(self)
                 if isinstance(v := getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)

    def slice(self, start: int, stop: int) -> "EncoderInputs":
        """Items [start, stop), trimmed to their own longest sequence; sizes come from the host-side lists."""
        stop = max(min(stop, len(self)), start)
        length, n = max(self.lengths[start:stop], default=1), max(self.counts[start:stop], default=1)
        pixels = self.pixel_values
        if pixels is not None and self.patches:  # the patches of all images are concatenated
            pixels = pixels[sum(self.patches[:start]) : sum(self.patches[:stop])]
        elif pixels is not None:
            pixels = pixels[start:stop]

        def rows(t, width=None):
            return None if t is None else t[start:stop] if width is None else t[start:stop, :width]

        return dataclasses.replace(
            self, input_ids=rows(self.input_ids, length), attention_mask=rows(self.attention_mask, length),
            vector_index=rows(self.vector_index, n), vector_mask=rows(self.vector_mask, n), grids=rows(self.grids),
            pixel_values=pixels, image_grid_thw=rows(self.image_grid_thw),
            token_type_ids=rows(self.token_type_ids, length), lengths=self.lengths[start:stop],
            counts=self.counts[start:stop], patches=self.patches[start:stop])


class PageInputs(EncoderInputs):
    """Processed page images."""


class QueryInputs(EncoderInputs):
    """Processed query texts."""


def pad_batch(seqs: list[list[int]], vec_pos: list[list[int]], pad_id: int) -> dict:
    """Right-pad token lists and vector positions -> the EncoderInputs fields input_ids, attention_mask [B, L],
    vector_index, vector_mask [B, N] and the host-side lengths and counts."""
    length = max(max(len(s) for s in seqs), 1)
    n = max(max(len(p) for p in vec_pos), 1)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    attn = torch.zeros(len(seqs), length, dtype=torch.long)
    index = torch.zeros(len(seqs), n, dtype=torch.long)
    vmask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, (s, p) in enumerate(zip(seqs, vec_pos)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
        index[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        vmask[i, : len(p)] = True
    return dict(input_ids=ids, attention_mask=attn, vector_index=index, vector_mask=vmask,
                lengths=tuple(len(s) for s in seqs), counts=tuple(len(p) for p in vec_pos))


class RetrieverProcessor:
    """Shared part: a tokenizer, an image processor, the query prefix (masked out) and the query length cap; a
    family's processor (pipeline/model/families/) adds `pages()` and what surrounds a query."""

    def __init__(self, tokenizer, image_processor, query_prefix: str = "", max_query_tokens: int = 32):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.query_prefix = query_prefix
        self.max_query_tokens = max_query_tokens

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _query_parts(self) -> tuple[list[int], list[int]]:
        """Token ids before and after the query text (never vectors)."""
        return self._ids(self.query_prefix), []

    def queries(self, texts: list[str]) -> QueryInputs:
        """Texts -> QueryInputs; vectors are the text's tokens only (at most max_query_tokens)."""
        before, after = self._query_parts()
        seqs, pos = [], []
        for t in texts:
            body = self._ids(t)[: self.max_query_tokens]
            seqs.append(before + body + after)
            pos.append(list(range(len(before), len(before) + len(body))))
        padded = pad_batch(seqs, pos, self.pad_id)
        return QueryInputs(**padded, token_type_ids=self._query_token_types(padded["input_ids"]))

    def _query_token_types(self, ids: torch.Tensor) -> torch.Tensor | None:
        return None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)


def load_parts(path: str | Path, **image_kwargs) -> tuple:
    """(tokenizer, image processor) of a checkpoint directory or hub name; `image_kwargs` go to the image
    processor's constructor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path, **image_kwargs)
