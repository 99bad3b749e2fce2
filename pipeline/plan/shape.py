"""The shape of the configured retriever, read off its architecture built on the meta device (no weights, no
download): parameter counts (total, trainable under LoRA or full fine-tuning, largest tensor) and the widths the
FLOP and memory models need."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.model.architectures import Tower
from pipeline.model.config import ModelConfig


@dataclass
class ModelShape:
    """What the plan needs to know about the retriever (backbone without LM head + exit heads + LoRA)."""

    arch: str  # the model family (pipeline/model/families/<arch>.py)
    source: str  # the config.json the shape was read from
    params_total: int
    params_trainable: int
    params_vision: int  # tower + merger / projector
    params_heads: int
    params_lora: int
    largest_tensor: int  # elements of the largest single parameter
    small_params: int  # elements in parameters below the ZeRO-3 persistence threshold (kept whole on every GPU)
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    norm: str  # rms (Qwen2) | gemma_rms (stores the fp32 normalised input too)
    tower: Tower
    exits: list[int] = field(default_factory=list)
    dim: int = 128
    lora_r: int = 0
    lora_targets: list[str] = field(default_factory=list)

    @property
    def vision_trainable(self) -> bool:
        return self.lora_r == 0


def model_shape(cfg: ModelConfig, persistence_threshold: int = 0) -> ModelShape:
    """Build `cfg.name_or_path`'s architecture on the meta device (shipped published config or a local
    checkpoint's config.json), add exit heads and LoRA as training would, and count."""
    from pipeline.model import backbone as bb
    from pipeline.model.architectures import find_architecture, load_architecture, meta_backbone
    from pipeline.model.families import of_config
    from pipeline.model.retriever import default_exits

    config = load_architecture(cfg.name_or_path)
    backbone = meta_backbone(config)
    family = of_config(config)
    tc = config.get_text_config()
    exits = sorted(cfg.exits or default_exits(tc.num_hidden_layers))
    if cfg.lora.r > 0:
        bb.add_lora(backbone, cfg)
    params = list(backbone.parameters())
    n_heads = len(exits) * (tc.hidden_size * cfg.dim + cfg.dim)  # one Linear(hidden, dim) per exit, trainable
    n_lora = sum(p.numel() for n, p in backbone.named_parameters() if "lora_" in n)
    vision = [m for name in bb.VISION_MODULES if (m := getattr(backbone, name, None)) is not None]
    head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    return ModelShape(
        arch=family.NAME, source=str(find_architecture(cfg.name_or_path)),
        params_total=sum(p.numel() for p in params) + n_heads,
        params_trainable=sum(p.numel() for p in params if p.requires_grad) + n_heads,
        params_vision=sum(p.numel() for m in vision for p in m.parameters()),
        params_heads=n_heads, params_lora=n_lora,
        largest_tensor=max(p.numel() for p in params),
        small_params=sum(p.numel() for p in params if p.numel() < persistence_threshold),
        hidden=tc.hidden_size, layers=tc.num_hidden_layers, heads=tc.num_attention_heads,
        kv_heads=tc.num_key_value_heads, head_dim=head_dim, intermediate=tc.intermediate_size,
        vocab=tc.vocab_size, norm=family.NORM, tower=family.tower(config), exits=exits,
        dim=cfg.dim, lora_r=cfg.lora.r, lora_targets=list(cfg.lora.target_modules) if cfg.lora.r else [],
    )
