"""The Qwen2-VL family (Qwen2-VL, Qwen2.5-VL): its page layout and processor, the backbone's forward arguments
(and the rope-delta reset), the tiny checkpoint's special tokens, and the plan's tower shape and activation formula."""

from __future__ import annotations

import torch

from pipeline.model.architectures import Tower
from pipeline.model.processor import EncoderInputs, PageInputs, RetrieverProcessor, load_parts, pad_batch

NAME = "qwen2_vl"  # saved in retriever_config.json as "arch"
MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")  # transformers config.model_type values of this family
NORM = "rms"  # the decoder's norm, as the plan counts its saved activations
VISION_DEPTH = "depth"  # the vision config's block count
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
TOKENS = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}  # roles of a local tokenizer's specials
_IMAGE_IDS = (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
              ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))


class Processor(RetrieverProcessor):
    """One <|image_pad|> per merged patch inside a user turn; mm_token_type_ids mark them."""

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
        padded = pad_batch(seqs, pos, self.pad_id)
        return PageInputs(**padded, grids=torch.tensor(grids), pixel_values=out["pixel_values"], image_grid_thw=thw,
                          token_type_ids=(padded["input_ids"] == image_id).long(),
                          patches=tuple(t * h * w for t, h, w in thw.tolist()))


def load_processor(path, config, query_prefix: str, max_query_tokens: int, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> Processor:
    """The processor of a checkpoint directory or hub name; page pixel bounds go to the image processor."""
    bounds = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    return Processor(*load_parts(path, **bounds), query_prefix, max_query_tokens)


def forward_kwargs(inputs: EncoderInputs, pixel_dtype: torch.dtype) -> dict:
    """The backbone's arguments: mm_token_type_ids is required with image_grid_thw (transformers 5)."""
    kwargs = dict(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, use_cache=False)
    if inputs.pixel_values is not None:
        kwargs.update(pixel_values=inputs.pixel_values, image_grid_thw=inputs.image_grid_thw,
                      mm_token_type_ids=inputs.token_type_ids)
    return kwargs


def before_forward(backbone) -> None:
    """Forget the rope deltas the backbone keeps: positions of a previous batch must not leak into this one."""
    backbone.rope_deltas = None


def prepare_random(config, vocab: dict[str, int], max_pixels: int) -> tuple[tuple[int, int, int], object]:
    """For a random checkpoint of `config` with a locally trained tokenizer (`vocab`): point the image-token ids at
    the tokenizer's; returns ((pad, bos, eos) ids, the image processor for pages of at most `max_pixels`)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    for key, token in _IMAGE_IDS:
        setattr(config, key, vocab[token])
    v = config.vision_config
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels, patch_size=v.patch_size,
                                         merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size)
    return (vocab["<|endoftext|>"], vocab["<|endoftext|>"], vocab["<|im_end|>"]), processor


def tower(config) -> Tower:
    v = config.vision_config
    return Tower(v.embed_dim, v.depth, v.num_heads, int(v.embed_dim * v.mlp_ratio), v.patch_size,
                 v.in_channels * v.temporal_patch_size * v.patch_size**2, v.spatial_merge_size, None)


def vision_block_base_bytes(b: int, t: Tower) -> float:
    """Saved bytes per patch of one vision block (b bytes per element) without its attention heads' statistics:
    two LayerNorms' inputs, outputs and statistics, the fused qkv output, rotated q and k, the attention output,
    and fc1 output / QuickGELU parts / fc2 input (3 x mlp)."""
    return b * (11 * t.width + 3 * t.mlp + 4)
