"""Page images and query texts -> model inputs plus where the vectors sit (built here: no torchvision needed).

Pages become one vector per image token (row-major over the merged patch grid), queries one per text token.
"""

from __future__ import annotations

import dataclasses
import math
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
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    vector_index: torch.Tensor
    vector_mask: torch.Tensor
    grids: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    token_type_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "EncoderInputs":
        moved = {f.name: (None if (v := getattr(self, f.name)) is None else v.to(device)) for f in dataclasses.fields(self)}
        return type(self)(**moved)

    def slice(self, start: int, stop: int) -> "EncoderInputs":
        """Items [start, stop), trimmed to their own longest sequence (reads lengths on the host)."""
        stop = min(stop, len(self))
        length = max(int(self.attention_mask[start:stop].sum(1).max()), 1) if stop > start else 1
        n = max(int(self.vector_mask[start:stop].sum(1).max()), 1) if stop > start else 1
        pixels = self.pixel_values
        if pixels is not None and self.image_grid_thw is not None:  # patches of all images are concatenated
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.image_grid_thw.prod(-1).cumsum(0).cpu()])
            pixels = pixels[int(offsets[start]) : int(offsets[stop])]
        elif pixels is not None:
            pixels = pixels[start:stop]

        def rows(t):
            return None if t is None else t[start:stop]

        return type(self)(
            self.input_ids[start:stop, :length], self.attention_mask[start:stop, :length],
            self.vector_index[start:stop, :n], self.vector_mask[start:stop, :n], rows(self.grids), pixels,
            rows(self.image_grid_thw), None if self.token_type_ids is None else self.token_type_ids[start:stop, :length],
        )


class PageInputs(EncoderInputs):
    """Processed page images."""


class QueryInputs(EncoderInputs):
    """Processed query texts."""


def _pad(seqs: list[list[int]], vec_pos: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad token lists and vector positions -> input_ids, attention_mask [B, L], vector_index, vector_mask [B, N]."""
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
    return ids, attn, index, vmask


class RetrieverProcessor:
    """Shared part: a tokenizer, an image processor, the query prefix (masked out) and the query length cap."""

    arch = ""

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
        ids, attn, index, vmask = _pad(seqs, pos, self.pad_id)
        return QueryInputs(ids, attn, index, vmask, token_type_ids=self._query_token_types(ids))

    def _query_token_types(self, ids: torch.Tensor) -> torch.Tensor | None:
        return None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)


class Qwen2VLRetrieverProcessor(RetrieverProcessor):
    """Qwen2-VL family: one <|image_pad|> per merged patch inside a user turn; mm_token_type_ids mark them."""

    arch = "qwen2_vl"
    PAGE_PREFIX = "<|im_start|>user\n<|vision_start|>"
    PAGE_SUFFIX = "<|vision_end|><|im_end|>"

    def pages(self, images: list) -> PageInputs:
        """PIL images -> PageInputs; a page of h x w patches gives (h/m) x (w/m) vectors, m the merge size."""
        out = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        thw = out["image_grid_thw"].long()
        merge = self.image_processor.merge_size
        image_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        before, after = self._ids(self.PAGE_PREFIX), self._ids(self.PAGE_SUFFIX)
        seqs, pos, grids = [], [], []
        for t, h, w in thw.tolist():
            rows, cols = h // merge, t * w // merge
            seqs.append(before + [image_id] * (rows * cols) + after)
            pos.append(list(range(len(before), len(before) + rows * cols)))
            grids.append([rows, cols])
        ids, attn, index, vmask = _pad(seqs, pos, self.pad_id)
        types = (ids == image_id).long()
        return PageInputs(ids, attn, index, vmask, torch.tensor(grids), out["pixel_values"], thw, types)


class PaliGemmaRetrieverProcessor(RetrieverProcessor):
    """PaliGemma family: image tokens, <bos>, prompt, newline; the whole input is a bidirectional prefix."""

    arch = "paligemma"
    PAGE_PROMPT = "Describe the image.\n"

    def __init__(self, *args, image_seq_length: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_seq_length = image_seq_length

    def _query_parts(self) -> tuple[list[int], list[int]]:
        return [self.tokenizer.bos_token_id] + self._ids(self.query_prefix), self._ids("\n")

    def _query_token_types(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(ids)

    def pages(self, images: list) -> PageInputs:
        """PIL images -> PageInputs; every page gives image_seq_length vectors on a square grid."""
        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        image_id = self.tokenizer.convert_tokens_to_ids("<image>")
        n = self.image_seq_length
        side = math.isqrt(n)
        seq = [image_id] * n + [self.tokenizer.bos_token_id] + self._ids(self.PAGE_PROMPT)
        ids, attn, index, vmask = _pad([seq] * len(images), [list(range(n))] * len(images), self.pad_id)
        grids = torch.tensor([[side, n // side]] * len(images))
        return PageInputs(ids, attn, index, vmask, grids, pixels, None, torch.zeros_like(ids))


def load_processor(path: str | Path, arch: str, config, query_prefix: str, max_query_tokens: int,
                   min_pixels: int | None = None, max_pixels: int | None = None) -> RetrieverProcessor:
    """The processor for a checkpoint directory or hub name; `config` is the backbone's transformers config."""
    from transformers import AutoImageProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {}
    if arch == "qwen2_vl":
        if min_pixels is not None:
            kwargs["min_pixels"] = min_pixels
        if max_pixels is not None:
            kwargs["max_pixels"] = max_pixels
    image_processor = AutoImageProcessor.from_pretrained(path, **kwargs)
    if arch == "qwen2_vl":
        return Qwen2VLRetrieverProcessor(tokenizer, image_processor, query_prefix, max_query_tokens)
    if arch == "paligemma":
        return PaliGemmaRetrieverProcessor(tokenizer, image_processor, query_prefix, max_query_tokens,
                                           image_seq_length=int(config.image_seq_length))
    raise ValueError(f"unsupported architecture {arch!r} (supported: qwen2_vl, paligemma)")
