"""Backbone loading (dtype, attention kernel, bitsandbytes), its decoder stack, and peft LoRA (merged on save)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from pipeline.model.config import ModelConfig

log = logging.getLogger(__name__)
VISION_MODULES = ["visual", "vision_tower", "multi_modal_projector", "merger"]


def resolve_attn(requested: str) -> str:
    """auto -> flash_attention_2 when flash_attn is installed and CUDA is present, else sdpa (one log line)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        choice = "flash_attention_2"
    else:
        choice = "sdpa"
    log.info("attention: %s (flash_attn %s, CUDA %s)", choice,
             "installed" if importlib.util.find_spec("flash_attn") else "not installed", torch.cuda.is_available())
    return choice


def resolve_dtype(requested: str) -> torch.dtype:
    """auto -> bfloat16 on CUDA, float32 on CPU; else the named torch dtype."""
    if requested == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, requested)


def quantization_config(mode: str):
    """none | 8bit | 4bit (NF4, double quant) -> a BitsAndBytesConfig or None; the vision tower stays unquantized."""
    if mode == "none":
        return None
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=VISION_MODULES)
    if mode == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32 if not torch.cuda.is_available() else torch.bfloat16,
                                  llm_int8_skip_modules=VISION_MODULES)
    raise ValueError(f"model.quantization must be none, 8bit or 4bit, got {mode!r}")


def load_backbone(path: str | Path, cfg: ModelConfig, plain_vlm: bool) -> nn.Module:
    """The base VLM (vision tower + language model, no LM head). `plain_vlm`: a generation checkpoint (hub name or
    a VLM directory), loaded through AutoModelForImageTextToText so the library's key conversions apply."""
    from transformers import AutoModel, AutoModelForImageTextToText

    # safetensors only: never unpickle a checkpoint (a hub repo with only pytorch_model.bin fails loudly).
    kwargs = dict(dtype=resolve_dtype(cfg.dtype), attn_implementation=resolve_attn(cfg.attn_implementation),
                  use_safetensors=True)
    quant = quantization_config(cfg.quantization)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if plain_vlm:
        vlm = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        backbone = vlm.model  # drop the LM head: the retriever never produces logits
        del vlm
    else:
        backbone = AutoModel.from_pretrained(path, **kwargs)
    if cfg.gradient_checkpointing:
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return backbone


def language_model(backbone: nn.Module) -> nn.Module:
    """The decoder stack (has .layers and .norm) of a Qwen2-VL or PaliGemma base model."""
    lm = backbone.language_model
    return lm.model if not hasattr(lm, "layers") and hasattr(lm, "model") else lm


def text_config(backbone: nn.Module):
    return backbone.config.get_text_config()


def add_lora(backbone: nn.Module, cfg: ModelConfig) -> None:
    """Inject LoRA adapters into the language model's target linears in place and freeze every other backbone
    weight (the vision tower included); heads stay trainable because they live outside the backbone."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules))
    lm = language_model(backbone)
    inject_adapter_in_model(lora, lm)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    n = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %d trainable backbone parameters", cfg.lora.r, cfg.lora.target_modules, n)


def merged_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict with LoRA deltas folded into the base weights and adapter keys removed, so it
    loads into the plain architecture. Without LoRA: the plain state dict."""
    from peft.tuners.lora import LoraLayer

    state = backbone.state_dict()
    lora_layers = {n: m for n, m in backbone.named_modules() if isinstance(m, LoraLayer)}
    if not lora_layers:
        return state
    out = {k: v for k, v in state.items() if "lora_" not in k and ".base_layer." not in k}
    for name, m in lora_layers.items():
        base = m.get_base_layer()
        weight = base.weight.detach().clone()
        for adapter in m.active_adapters:
            weight += m.get_delta_weight(adapter).to(weight.dtype)
        out[f"{name}.weight"] = weight
        if base.bias is not None:
            out[f"{name}.bias"] = base.bias.detach().clone()
    return out


def merge_lora_dict(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The same merge on a plain state dict (e.g. consolidated from ZeRO-3 partitions): for every
    `X.base_layer.weight` with `X.lora_A.<name>.weight` [r, in] and `X.lora_B.<name>.weight` [out, r],
    `X.weight` = base + scaling * B @ A; adapter keys dropped. `scaling` = lora alpha / r."""
    out = {}
    for key, value in state.items():
        if "lora_" in key:
            continue
        if ".base_layer." not in key:
            out[key] = value
            continue
        prefix, leaf = key.split(".base_layer.")
        if leaf == "weight":
            value = value.clone()
            for a_key in [k for k in state if k.startswith(prefix + ".lora_A.") and k.endswith(".weight")]:
                b = state[a_key.replace(".lora_A.", ".lora_B.")]
                value += scaling * (b.float() @ state[a_key].float()).to(value.dtype)
        out[f"{prefix}.{leaf}"] = value
    return out
