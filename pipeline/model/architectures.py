"""Published architecture configs shipped in configs/architectures/: find one for a model name, build its
transformers config (optionally at truncated depth), instantiate the backbone on the meta device, and the shape of
its vision tower (`Tower`, read by each family).

The shipped files are the models' published config.json, so the real architecture can be sized and tested
without a download; a local checkpoint directory's own config.json is used the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ARCH_DIR = Path(__file__).resolve().parents[2] / "configs" / "architectures"


@dataclass
class Tower:
    """The vision tower: `width` E, `depth` blocks, `heads`, MLP width `mlp`, one patch = `patch_dim` input values;
    `merge` x `merge` patches become one image token (1 for PaliGemma)."""

    width: int
    depth: int
    heads: int
    mlp: int
    patch: int
    patch_dim: int
    merge: int
    image_size: int | None  # fixed square input side (PaliGemma); None: dynamic resolution (Qwen2-VL)


def find_architecture(name_or_path: str | Path) -> Path | None:
    """The config.json describing `name_or_path`: a local checkpoint's own, else the shipped file named after the
    hub name's last part (Qwen/Qwen2-VL-2B-Instruct -> configs/architectures/Qwen2-VL-2B-Instruct.json), else None."""
    local = Path(name_or_path) / "config.json"
    if local.is_file():
        return local
    shipped = ARCH_DIR / f"{Path(str(name_or_path)).name}.json"
    return shipped if shipped.is_file() else None


def shipped_names() -> list[str]:
    return sorted(p.stem for p in ARCH_DIR.glob("*.json"))


def load_architecture(name_or_path: str | Path, text_layers: int | None = None, vision_layers: int | None = None):
    """The transformers config of `name_or_path` (see find_architecture), with the decoder cut to `text_layers`
    and the vision tower to `vision_layers` when given (every width stays). Raises FileNotFoundError naming the
    model and the shipped choices when there is none."""
    from transformers import AutoConfig

    path = find_architecture(name_or_path)
    if path is None:
        raise FileNotFoundError(f"no architecture for {name_or_path!r}: not a local checkpoint and not shipped in "
                                f"{ARCH_DIR} (shipped: {', '.join(shipped_names())})")
    raw = json.loads(path.read_text())
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    if text_layers is not None or vision_layers is not None:
        config = cut_depth(config, text_layers, vision_layers)
    return config


def cut_depth(config, text_layers: int | None, vision_layers: int | None):
    """A copy of `config` with fewer decoder layers / vision blocks (widths unchanged)."""
    config = type(config).from_dict(config.to_dict())
    text = config.get_text_config()
    if text_layers is not None:
        text.num_hidden_layers = text_layers
        if getattr(text, "layer_types", None):
            text.layer_types = list(text.layer_types)[:text_layers]
    if vision_layers is not None:
        from pipeline.model.families import of_config

        setattr(config.vision_config, of_config(config).VISION_DEPTH, vision_layers)
    return config


def meta_backbone(config) -> nn.Module:
    """The base VLM (vision tower + decoder, no LM head) built on the meta device: shapes only, no memory."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        vlm = AutoModelForImageTextToText.from_config(config)
    return vlm.model
