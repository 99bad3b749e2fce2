"""Export: each variant, loaded alone in a new process, encodes exactly as the full model at its budget; it is
smaller on disk by the layers it drops; its card carries the budget and quality measured on the eval set."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from pipeline.data.reader import Page, ShardPages
from pipeline.export.variants import weights_bytes
from pipeline.model.backbone import language_model
from pipeline.model.budgets import Budget
from pipeline.model.retriever import Retriever
from tests.helpers.chain import RESOLVED

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["ABC", "find the code XYZ"]


@pytest.fixture(scope="module")
def setup(chain):
    return chain.model_dir, chain.shards, chain.exported()


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory, setup):
    out = tmp_path_factory.mktemp("pages")
    pages = list(ShardPages(setup[1], "train", max_pages=3).pages())
    pages.append(Page("wide", pages[0].image.resize((168, 112)), []))  # a 4 x 6 grid: ragged pools
    for i, p in enumerate(pages):
        p.image.save(out / f"{i}.png")
    return out


def test_variant_in_new_process_equals_full_model_at_budget(setup, page_dir, tmp_path):
    model_dir, _, variants = setup
    full = Retriever.from_pretrained(model_dir).eval()
    images = [Image.open(p).convert("RGB") for p in sorted(page_dir.glob("*.png"))]
    dirs = [str(path) for path, _ in variants.values()]
    subprocess.run([sys.executable, str(ROOT / "tests/helpers/load_variant_worker.py"), str(page_dir), str(tmp_path), *dirs],
                   check=True, cwd=ROOT, timeout=300)
    for name, (path, card) in variants.items():
        budget = Budget(**card["budget"])
        out = tmp_path / f"{path.name}.safetensors"
        want_pages = full.embed(pages=images, budget=budget)
        want_queries = full.embed(queries=QUERIES, budget=budget)
        with safe_open(str(out), "pt") as f:
            assert f.metadata()["imported"] == ""  # no DeepSpeed, no training code
            assert int(f.metadata()["layers"]) == budget.layers
            for i, want in enumerate(want_pages):
                got = f.get_tensor(f"page{i}")
                assert got.shape == want.shape and got.shape[1] == budget.dim
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            for i, want in enumerate(want_queries):
                torch.testing.assert_close(f.get_tensor(f"query{i}"), want, atol=1e-5, rtol=1e-5)
    # The ragged 4 x 6 page at pool 4 keeps ceil(4/4) * ceil(6/4) = 2 vectors.
    assert want_pages[-1].shape[0] == 2 and budget.pool == 4


def test_variant_smaller_by_the_layers_it_drops(setup):
    model_dir, _, variants = setup
    full = Retriever.from_pretrained(model_dir)
    layers = language_model(full.backbone).layers
    per_layer = [sum(p.numel() * p.element_size() for p in layer.parameters()) for layer in layers]
    head_bytes = {e: full.heads.proj[str(e)].weight.element_size() * full.heads.proj[str(e)].weight.shape[1]
                  for e in full.exits}  # bytes per output dim of each exit's head (+ bias below)
    total = weights_bytes(model_dir)
    for name, (path, card) in variants.items():
        b = card["budget"]
        kept = [e for e in full.exits if e <= b["layers"]]  # every exit up to the budget's, sliced to its width
        bias = full.heads.proj[str(kept[0])].bias.element_size()
        kept_heads = sum(b["dim"] * (head_bytes[e] + bias) for e in kept)
        all_heads = sum(p.numel() * p.element_size() for p in full.heads.parameters())
        expected_drop = sum(per_layer[b["layers"]:]) + all_heads - kept_heads
        drop = total - weights_bytes(path)
        n_dropped = sum(len(list(layer.parameters())) for layer in layers[b["layers"]:]) + 2 * (len(full.exits) - len(kept))
        # Exactly the dropped tensors' bytes, plus their entries leaving the safetensors header (~100 B each).
        assert expected_drop <= drop < expected_drop + 200 * n_dropped + 1024, (name, drop, expected_drop)
        assert drop >= 0.9 * sum(per_layer[b["layers"]:])  # smaller in proportion to the layers dropped


def test_cards_carry_budget_and_measured_quality(setup):
    model_dir, shards, variants = setup
    fp = ShardPages(shards, "train").fingerprint
    for name, (path, card) in variants.items():
        layers, dim, pool, precision = RESOLVED[name]
        assert card["budget"] == {"layers": layers, "dim": dim, "pool": pool, "precision": precision}
        # 112 x 112 pages: a 4 x 4 grid -> ceil(4/p)^2 vectors x (dim x 2 bytes at fp16 | dim / 8 bytes as bits).
        per_vector = dim * 2 if precision == "fp16" else dim // 8
        assert card["bytes_per_page"] == (-(-4 // pool)) ** 2 * per_vector
        assert card["eval_fingerprint"] == fp and 0.0 <= card["ndcg_at_5"] <= 1.0
        assert card["metrics"]["ndcg_at_5"] == card["ndcg_at_5"]
        on_disk = json.loads((path / "card.json").read_text())
        assert on_disk["budget"] == card["budget"]
        rc = json.loads((path / "retriever_config.json").read_text())
        assert rc["exits"] == list(range(1, layers + 1)) and rc["default_budget"] == card["budget"]  # exits 1..4
    # Same weights at another precision: the bit variant's quality is its own measurement, its bytes 1/16.
    half, bits = variants["half"][1], variants["half-bin"][1]
    assert bits["bytes_per_page"] * 16 == half["bytes_per_page"]
