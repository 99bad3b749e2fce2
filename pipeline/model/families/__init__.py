"""Model families: what differs between VLM families lives in one module each (`qwen2_vl.py`, `paligemma.py`), found
here by name or by a transformers config's model_type. Adding a family is adding its module (the same names as the
others: NAME, MODEL_TYPES, Processor, load_processor, forward_kwargs, before_forward, prepare_random, tower,
vision_block_base_bytes, ...) plus its tests.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

FAMILIES: dict[str, ModuleType] = {
    m.NAME: m for m in (importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)
                        if not info.name.startswith("_"))
}
_BY_MODEL_TYPE = {t: f for f in FAMILIES.values() for t in f.MODEL_TYPES}


def of_config(config) -> ModuleType:
    """The family of a transformers config (by its model_type)."""
    family = _BY_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise ValueError(f"unsupported model type {config.model_type!r} (supported: {', '.join(_BY_MODEL_TYPE)})")
    return family


def named(name: str) -> ModuleType:
    """The family saved as `name` (retriever_config.json's "arch")."""
    if name not in FAMILIES:
        raise ValueError(f"unsupported architecture {name!r} (supported: {', '.join(FAMILIES)})")
    return FAMILIES[name]
