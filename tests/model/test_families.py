"""Model families: one module each under pipeline/model/families/, found by name and by model_type, all with the
same interface; no other library module names a family (adding a family is adding its module and its tests)."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.model import families
from pipeline.model.processor import EncoderInputs, RetrieverProcessor

ROOT = Path(__file__).resolve().parents[2]
INTERFACE = {"NAME": str, "MODEL_TYPES": tuple, "NORM": str, "VISION_DEPTH": str, "SPECIALS": list, "TOKENS": dict}
FUNCTIONS = ["load_processor", "forward_kwargs", "before_forward", "prepare_random", "tower", "vision_block_base_bytes"]


def test_every_family_module_is_found_and_has_the_whole_interface():
    files = sorted(p.stem for p in (ROOT / "pipeline/model/families").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in families.FAMILIES.values()) == files
    for name, family in families.FAMILIES.items():
        assert family.NAME == name and families.named(name) is family
        for attr, kind in INTERFACE.items():
            assert isinstance(getattr(family, attr), kind), (name, attr)
        assert all(callable(getattr(family, f)) for f in FUNCTIONS), name
        assert issubclass(family.Processor, RetrieverProcessor) and callable(family.Processor.pages)
        assert set(family.TOKENS.values()) <= set(family.SPECIALS)


def test_model_types_map_to_their_family_and_unknown_ones_are_refused():
    assert families.of_config(SimpleNamespace(model_type="qwen2_5_vl")).NAME == "qwen2_vl"
    assert families.of_config(SimpleNamespace(model_type="paligemma")).NAME == "paligemma"
    with pytest.raises(ValueError, match=r"unsupported model type 'llava' \(supported: .*qwen2_vl"):
        families.of_config(SimpleNamespace(model_type="llava"))
    with pytest.raises(ValueError, match="unsupported architecture 'llava'"):
        families.named("llava")


def _inputs(pixels: torch.Tensor | None) -> EncoderInputs:
    ids = torch.ones(2, 5, dtype=torch.long)
    index, mask = torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool)
    return EncoderInputs(ids, torch.ones_like(ids), index, mask,
                         pixel_values=pixels, image_grid_thw=None if pixels is None else torch.tensor([[1, 2, 2]] * 2),
                         token_type_ids=torch.zeros_like(ids))


def test_forward_arguments_follow_each_family():
    qwen, gemma = families.named("qwen2_vl"), families.named("paligemma")
    pages = _inputs(torch.zeros(8, 4, dtype=torch.float32))
    q = qwen.forward_kwargs(pages, torch.bfloat16)
    assert set(q) == {"input_ids", "attention_mask", "use_cache", "pixel_values", "image_grid_thw", "mm_token_type_ids"}
    assert q["pixel_values"].dtype == torch.float32 and q["use_cache"] is False  # Qwen casts inside its tower
    assert set(qwen.forward_kwargs(_inputs(None), torch.float32)) == {"input_ids", "attention_mask", "use_cache"}
    g = gemma.forward_kwargs(pages, torch.bfloat16)
    assert set(g) == {"input_ids", "attention_mask", "use_cache", "token_type_ids", "pixel_values"}
    assert g["pixel_values"].dtype == torch.bfloat16  # in the weights' dtype
    assert "token_type_ids" in gemma.forward_kwargs(_inputs(None), torch.float32)  # queries too: a prefix mask


def test_only_qwen_resets_state_between_batches():
    backbone = SimpleNamespace(rope_deltas=torch.ones(1))
    families.named("paligemma").before_forward(backbone)
    assert backbone.rope_deltas is not None
    families.named("qwen2_vl").before_forward(backbone)
    assert backbone.rope_deltas is None


def test_no_library_module_outside_families_names_a_family():
    names = {n for f in families.FAMILIES.values() for n in (f.NAME, *f.MODEL_TYPES)}
    found = []
    for path in sorted(p for d in ("pipeline", "data_prep", "demo") for p in (ROOT / d).rglob("*.py")):
        if "families" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []
