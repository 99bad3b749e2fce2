"""The PaliGemma family (SigLIP tower + Gemma decoder): its page layout and processor, the backbone's forward
arguments, the tiny checkpoint's special tokens, and the plan's tower shape and activation formula."""

from __future__ import annotations

import math

import torch

from pipeline.model.architectures import Tower
from pipeline.model.processor import EncoderInputs, PageInputs, RetrieverProcessor, load_parts, pad_batch

NAME = "paligemma"  # saved in retriever_config.json as "arch"
MODEL_TYPES = ("paligemma",)  # transformers config.model_type values of this family
NORM = "gemma_rms"  # the decoder's norm: it stores the float32 normalised input too
VISION_DEPTH = "num_hidden_layers"  # the vision config's block count
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}


class Processor(RetrieverProcessor):
    """Image tokens, <bos>, prompt, newline; the whole input is a bidirectional prefix."""

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
        padded = pad_batch([seq] * len(images), [list(range(n))] * len(images), self.pad_id)
        return PageInputs(**padded, grids=torch.tensor([[side, n // side]] * len(images)), pixel_values=pixels,
                          token_type_ids=torch.zeros_like(padded["input_ids"]))


def load_processor(path, config, query_prefix: str, max_query_tokens: int, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> Processor:
    """The processor of a checkpoint directory or hub name (pages are the tower's fixed size: pixel bounds do not
    apply)."""
    return Processor(*load_parts(path), query_prefix, max_query_tokens, image_seq_length=int(config.image_seq_length))


def forward_kwargs(inputs: EncoderInputs, pixel_dtype: torch.dtype) -> dict:
    """The backbone's arguments: token_type_ids always; pixels in the weights' dtype."""
    kwargs = dict(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, use_cache=False,
                  token_type_ids=inputs.token_type_ids)
    if inputs.pixel_values is not None:
        kwargs["pixel_values"] = inputs.pixel_values.to(pixel_dtype)
    return kwargs


def before_forward(backbone) -> None:
    """Nothing to reset between batches."""


def prepare_random(config, vocab: dict[str, int], max_pixels: int) -> tuple[tuple[int, int, int], object]:
    """For a random checkpoint of `config` with a locally trained tokenizer (`vocab`): point the image token at the
    tokenizer's and size the image sequence to the tower; returns ((pad, bos, eos) ids, the image processor: pages
    are vision_config.image_size square, `max_pixels` does not apply)."""
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    config.image_token_index = vocab["<image>"]
    side = config.vision_config.image_size
    config.image_seq_length = (side // config.vision_config.patch_size) ** 2
    processor = SiglipImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return (vocab["<pad>"], vocab["<bos>"], vocab["<eos>"]), processor


def tower(config) -> Tower:
    v = config.vision_config
    return Tower(v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size, v.patch_size,
                 v.num_channels * v.patch_size**2, 1, v.image_size)


def vision_block_base_bytes(b: int, t: Tower) -> float:
    """Saved bytes per patch of one SigLIP block (b bytes per element) without its attention heads' statistics:
    two LayerNorms' inputs, outputs and statistics, q, k, v, the attention output, and the tanh-GELU's input and
    output (2 x mlp)."""
    return b * (8 * t.width + 2 * t.mlp + 4)
