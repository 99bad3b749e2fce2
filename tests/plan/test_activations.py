"""The plan's activation formulas against what autograd really saves, at the published widths (2 decoder layers,
2 vision blocks), for Qwen2-VL and PaliGemma, full fine-tuning and LoRA, bfloat16 and float32."""

import pytest
import torch
from PIL import Image

from pipeline.config import LoraConfig, ModelConfig
from pipeline.model.retriever import Retriever
from pipeline.plan.activations import chunk_bytes, other_bytes, text_layer_bytes, vision_block_bytes
from pipeline.plan.shape import model_shape
from pipeline.plan.workload import Workload
from tests.helpers.activation_probe import saved_bytes

CASES = [("qwen2_vl", 0, "bfloat16"), ("qwen2_vl", 32, "bfloat16"), ("qwen2_vl", 0, "float32"),
         ("paligemma", 0, "bfloat16"), ("paligemma", 32, "bfloat16")]


@pytest.mark.parametrize("arch,lora,dtype", CASES)
def test_formulas_match_what_autograd_saves(narrow_vocab_checkpoints, arch, lora, dtype):
    path = str(narrow_vocab_checkpoints[arch])
    cfg = ModelConfig(name_or_path=path, dtype=dtype, attn_implementation="sdpa", max_pixels=448 * 448,
                      lora=LoraConfig(r=lora))
    retriever = Retriever.from_pretrained(path, cfg).train()
    side = 448 if arch == "qwen2_vl" else 224
    pages = retriever.processor.pages([Image.new("RGB", (side, side), "white")])
    measured = saved_bytes(retriever, pages)
    shape = model_shape(cfg)
    b = torch.finfo(getattr(torch, dtype)).bits // 8
    seq, vectors = int(pages.attention_mask.sum()), int(pages.vector_mask.sum())
    patches = pages.pixel_values.shape[0] if arch == "qwen2_vl" else vectors
    assert shape.lora_r == lora and (shape.params_trainable < shape.params_total) == bool(lora)

    # Layer 1 (layer 0's input needs no gradient under LoRA, so it keeps a little less).
    want = text_layer_bytes(shape, b, seq, masked=arch == "paligemma")
    assert measured["text1"] / seq == pytest.approx(want, rel=0.03)
    want_block = vision_block_bytes(shape, b, patches)
    if lora:
        assert want_block == 0 and "vision1" not in measured  # a frozen tower keeps nothing
    else:
        assert measured["vision1"] / patches == pytest.approx(want_block, rel=0.03)

    w = Workload(1, 1, 1, 1, vectors, patches, seq, 0, 0)
    assert measured["other"] == pytest.approx(other_bytes(shape, b, w, pages=True), rel=0.15)
    total = sum(measured.values())
    predicted = chunk_bytes(shape, b, w, checkpointing=False) - 2 * b * shape.hidden * seq  # minus grads in flight
    assert total == pytest.approx(predicted, rel=0.10)
