"""The plan: the shipped real architectures' sizes, model states against DeepSpeed's own estimator, FLOPs against
the meta-built modules, and the command line (JSON keys, fits, the one-line refusal and its advice)."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import RunConfig
from pipeline.config import LoraConfig, ModelConfig, load_config
from pipeline.model.architectures import load_architecture, meta_backbone
from pipeline.plan import flops as fl
from pipeline.plan.memory import Zero, model_states
from pipeline.plan.report import Cluster, make_plan
from pipeline.plan.shape import model_shape
from pipeline.plan.workload import make_workload

ROOT = Path(__file__).resolve().parents[2]
QWEN, PALI = "Qwen/Qwen2-VL-2B-Instruct", "google/paligemma-3b-mix-448"


def test_published_sizes_and_widths():
    """Qwen2-VL-2B-Instruct: 2,208,985,600 (the hub's 2.21B; tied embeddings counted once); PaliGemma-3B-448:
    2,924,351,216 = keras-hub's pali_gemma_3b_mix_448 2,924,220,144 plus the 64 padding rows of the 257,216
    vocabulary (64 x 2048 = 131,072)."""
    q = load_architecture(QWEN)
    assert sum(p.numel() for p in meta_backbone(q).parameters()) == 2_208_985_600
    t = q.get_text_config()
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (1536, 28, 12, 2)
    assert (t.intermediate_size, t.vocab_size, t.rope_parameters["mrope_section"]) == (8960, 151936, [16, 24, 24])
    v = q.vision_config
    assert (v.depth, v.embed_dim, v.num_heads, v.mlp_ratio, v.patch_size, v.spatial_merge_size) == (32, 1280, 16, 4, 14, 2)
    assert q.tie_word_embeddings
    p = load_architecture(PALI)
    assert sum(x.numel() for x in meta_backbone(p).parameters()) == 2_924_220_144 + 64 * 2048
    assert (p.vision_config.image_size, p.vision_config.num_hidden_layers, p.text_config.num_hidden_layers) == (448, 27, 18)


def test_shape_counts_heads_and_lora():
    full = model_shape(ModelConfig(name_or_path=QWEN))
    assert full.exits == [7, 14, 21, 28] and full.params_heads == 4 * (1536 * 128 + 128)
    assert full.params_total == 2_208_985_600 + full.params_heads == full.params_trainable
    lora = model_shape(ModelConfig(name_or_path=QWEN, lora=LoraConfig(r=32)))
    per_layer = 32 * sum(i + o for i, o in fl.lora_shapes(lora).values())
    assert lora.params_lora == 28 * per_layer
    assert lora.params_trainable == lora.params_lora + lora.params_heads
    assert lora.params_total == full.params_total + lora.params_lora


@pytest.mark.parametrize("offload", ["none", "optimizer", "both"])
def test_model_states_match_deepspeeds_estimator(offload):
    """Full fine-tuning, bf16 AdamW: our params + grads + optimizer per GPU equal DeepSpeed's estimate minus its
    largest-layer term (our gathered working set) and minus the buckets in flight (not in its estimate)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    shape = model_shape(ModelConfig(name_or_path=QWEN))
    zero = Zero(3, offload == "both", offload != "none", 10**9, 5 * 10**7, 0, 0)
    ours = model_states(shape, zero, 2, "adamw", 64)
    _, gpu, largest = estimate_zero3_model_states_mem_needs(
        shape.params_total, shape.largest_tensor, num_gpus_per_node=8, num_nodes=8,
        cpu_offload=offload != "none", cpu_offload_params=offload == "both")
    assert ours["params"] + ours["grads"] + ours["optimizer"] == pytest.approx(gpu - largest, rel=1e-6, abs=8)


@pytest.mark.parametrize("name", [QWEN, PALI])
def test_forward_flops_are_twice_the_linear_weights(name):
    """2 FLOPs per weight per token: the decoder's and the tower's Linear/Conv weights read off the meta model."""
    from torch import nn

    cfg = load_config(None, [f"model.name_or_path={name}", "model.max_pixels=1003520"], root=RunConfig)
    shape = model_shape(cfg.model)
    w = make_workload(cfg, shape, 1)
    backbone = meta_backbone(load_architecture(name))
    lm = backbone.language_model
    text = sum(m.weight.numel() for m in lm.layers.modules() if isinstance(m, nn.Linear))
    assert fl.decoder_forward(shape, 10, 1).linear == pytest.approx(2 * text * 10)
    tower = getattr(backbone, "visual", None) or backbone.vision_tower
    weights = sum(m.weight.numel() for m in tower.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)))
    if name == PALI:
        weights += backbone.multi_modal_projector.linear.weight.numel()
    per_page = fl.vision_forward(shape, 1, w).linear
    assert 2 * weights * w.page_tokens <= per_page <= 2 * weights * w.page_patches  # once per token .. per patch


def plan_cli(*args: str) -> subprocess.CompletedProcess:
    """The plan command's main() in this process, its exit code and what it printed: the command's imports (6 of
    its 7 s) are paid once per worker. test_unknown_model_is_one_clear_error runs the real `python -m`."""
    from pipeline.plan.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argument errors exit from the parser
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("config", ["configs/colqwen2_2b.yaml", "configs/colpali_3b.yaml"])
def test_shipped_configs_fit_on_8x8_h100(config):
    out = plan_cli("--config", config, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads(out.stdout)
    for key in ("params_total", "params_trainable", "tokens_per_step", "flops_per_step", "gpu_memory_gib", "fits",
                "step_seconds"):
        assert key in plan
    assert plan["fits"] and plan["gpu_memory_gib"]["total"] <= 80
    assert set(plan["flops_per_step"]) >= {"forward", "backward", "grad_cache_forward", "recompute"}
    assert set(plan["step_seconds"]) == {"30%", "40%", "50%"}
    assert plan["step_seconds"]["30%"] > plan["step_seconds"]["40%"] > plan["step_seconds"]["50%"] > 0
    assert plan["params_trainable"] < plan["params_total"] / 20  # LoRA
    mem = plan["gpu_memory_gib"]
    assert mem["activations_with_checkpointing"] < mem["activations_without_checkpointing"]
    w = plan["batch"]
    assert plan["tokens_per_step"] == 256 * (w["page_seq"] + w["query_seq"])
    if "colqwen2" in config:
        assert w["page_tokens"] == 1280 and plan["params_total"] > 2.2e9  # 1,003,520 px = 1280 x 28 x 28


def test_table_names_every_term():
    out = plan_cli("--config", "configs/colqwen2_2b.yaml", "--nodes", "1")
    assert out.returncode == 0
    for word in ("params_gathered", "optimizer", "activations", "page_vectors", "step at 40% MFU", "fits"):
        assert word in out.stdout


def test_a_config_that_does_not_fit_names_the_term_and_a_fix_that_fits():
    args = ["--config", "configs/colqwen2_2b.yaml", "--nodes", "1", "--gpus-per-node", "8", "--gpu-memory-gib", "24",
            "model.gradient_checkpointing=false", "train.chunk_size=32"]
    out = plan_cli(*args)
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("does not fit:") and "largest term activations" in line
    assert "model.gradient_checkpointing=true" in line
    chunk = int(line.split("train.chunk_size=")[1].split()[0].rstrip(","))
    again = plan_cli(*args[:-1], f"train.chunk_size={chunk}", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["fits"]
    full = plan_cli("--config", "configs/colqwen2_2b.yaml", "--nodes", "1", "--gpus-per-node", "1",
                    "--gpu-memory-gib", "40", "model.lora.r=0", "train.deepspeed_config=deepspeed_configs/zero2.json")
    assert full.returncode == 1 and "largest term optimizer" in full.stderr and "zero3_offload.json" in full.stderr


@pytest.mark.heavy  # launches the plan command
def test_unknown_model_is_one_clear_error():
    out = subprocess.run([sys.executable, "-m", "pipeline.plan", "--config", "configs/colqwen2_2b.yaml",
                          "model.name_or_path=acme/NoSuchVLM-7B"], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 2
    assert "acme/NoSuchVLM-7B" in out.stderr and "Qwen2-VL-2B-Instruct" in out.stderr
    assert "Traceback" not in out.stderr


def test_batch_that_does_not_split_is_refused():
    cfg = load_config("configs/colqwen2_2b.yaml", ["data.global_batch=100"], root=RunConfig)
    with pytest.raises(ValueError, match="not a multiple of 64"):
        make_plan(cfg, Cluster())
