"""Will the code run at the real size? The published Qwen2-VL-2B and PaliGemma-3B-448 widths (GQA,
head_dim 128 / 256, M-RoPE sections, the 1280-wide tower merged to 1536, SigLIP-So400m) at truncated depth
(2 decoder layers, 2 vision blocks), random weights, small pages, on 2 CPU ranks under ZeRO-3 with gradient
checkpointing: one gradient-cached step equals the plain step; the result exports a budget variant that a fresh
process loads and that encodes as the full model does at that budget."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from pipeline.export.variants import export_variant
from pipeline.model.architectures import load_architecture
from pipeline.model.budgets import Budget
from pipeline.model.retriever import Retriever
from pipeline.model.tiny import build_random_checkpoint
from tests.helpers.procs import run, torchrun_cmd

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)

ROOT = Path(__file__).resolve().parents[2]
# arch: (published name, page side in px, LoRA rank). Qwen2-VL trains every weight; PaliGemma trains LoRA as
# shipped. Both vocabularies are cut to 16,384 rows (VOCAB): at the published 151,936 / 257,216 rows two ranks each
# holding the model, its gathered copy and (full fine-tuning) a dense embedding gradient took 14-16 GB and were
# killed on a shared 24 GB machine; no code path depends on the row count, and the plan sizes the real one.
CASES = {
    "qwen2_vl": ("Qwen/Qwen2-VL-2B-Instruct", 112, 0),
    "paligemma": ("google/paligemma-3b-mix-448", 112, 32),
}
VOCAB = 16384
# glibc hands every tensor over 32 MB back to the kernel when freed, and ZeRO-3 gathers and frees each layer's
# weights (up to 128 MB a tensor here) at every use: half of the ranks' CPU time went to page faults. Kept in one
# arena instead (measured on both cases: CPU 171 s instead of 217 s, peak rank 6.3 GB instead of 5.0 GB).
KEEP_FREED = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=268435456:"
                                "glibc.malloc.arena_max=1"}


def ds_test_config(out: Path) -> None:
    """zero3.json with every tensor partitioned (no persistence threshold), as out/zero3_test.json."""
    ds = json.loads((ROOT / "deepspeed_configs" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (out / "zero3_test.json").write_text(json.dumps(ds))


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CASES))
def test_real_width_zero3_step_and_variant(arch, tmp_path):
    name, side, lora = CASES[arch]
    config = load_architecture(name, text_layers=2, vision_layers=2)
    if arch == "paligemma":
        config.vision_config.image_size = side  # small pages; every width stays
    config.get_text_config().vocab_size = VOCAB
    model_dir = build_random_checkpoint(config, tmp_path / "model", max_pixels=side * side)
    text = json.loads((model_dir / "config.json").read_text())["text_config"]
    assert text["hidden_size"] in (1536, 2048) and text["num_hidden_layers"] == 2
    assert text["vocab_size"] == VOCAB
    out = tmp_path / "run"
    out.mkdir()
    ds_test_config(out)
    cmd = torchrun_cmd(2, "tests/plan/_smoke_worker.py", str(model_dir), str(out), "--side", str(side),
                       "--lora", str(lora))
    proc = run(cmd, timeout=600, env=KEEP_FREED)
    assert proc.returncode == 0, proc.stdout[-4000:]

    cached, plain = load_file(str(out / "cached.safetensors")), load_file(str(out / "plain.safetensors"))
    info = json.loads((out / "cached.json").read_text())
    assert set(cached) == set(plain) and info["moved"] > 1e-4
    err = max(float((cached[k] - plain[k]).abs().max()) for k in cached)
    assert err < 1e-5 + 1e-3 * info["moved"], (err, info)
    assert info["loss"] == pytest.approx(json.loads((out / "plain.json").read_text())["loss"], abs=1e-4)
    if lora:
        assert all("lora_" in k or k.startswith("heads.") for k in cached)

    full = Retriever.from_pretrained(out / "final").eval()
    budget = Budget(1, 32, 2)
    variant = export_variant(full, budget, tmp_path / "variant", {"name": "small", "budget": budget.as_dict()})
    pages = tmp_path / "pages"
    pages.mkdir()
    images = [Image.new("RGB", (side, side), c) for c in ("white", "gray")]
    for i, im in enumerate(images):
        im.save(pages / f"{i}.png")
    subprocess.run([sys.executable, str(ROOT / "tests/helpers/load_variant_worker.py"), str(pages), str(tmp_path),
                    str(variant)], check=True, cwd=ROOT, timeout=300)
    want = full.embed(pages=images, budget=budget)
    with safe_open(str(tmp_path / "variant.safetensors"), "pt") as f:
        assert f.metadata()["imported"] == "" and int(f.metadata()["layers"]) == 1
        for i, w in enumerate(want):
            got = f.get_tensor(f"page{i}")
            assert got.shape == w.shape and got.shape[1] == 32
            torch.testing.assert_close(got, w, atol=1e-4, rtol=1e-4)
