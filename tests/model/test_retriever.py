"""The retriever on tiny Qwen2-VL and PaliGemma: early exit, vector positions, save/load, budget variants."""

import json
import logging

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pipeline.config import LossConfig, ModelConfig
from pipeline.model import backbone as bb
from pipeline.model.budgets import Budget, budget_grid
from pipeline.model.pooling import apply_budget
from pipeline.model.retriever import Retriever
from pipeline.train.loss import matryoshka_loss


def page_images(n=3, sizes=((112, 112), (168, 112), (112, 84))):
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray(torch.randint(0, 255, (sizes[i % len(sizes)][1], sizes[i % len(sizes)][0], 3),
                                          generator=g, dtype=torch.uint8).numpy()) for i in range(n)]


@pytest.fixture(scope="module", params=["qwen2vl", "paligemma"])
def model(request, tiny_qwen2vl_dir, tiny_paligemma_dir):
    path = tiny_qwen2vl_dir if request.param == "qwen2vl" else tiny_paligemma_dir
    return Retriever.from_pretrained(path, ModelConfig(name_or_path=str(path), query_prefix="Query: ")).eval()


def reference_exit(model, inputs, k):
    """Full-depth forward with output_hidden_states; hidden state k (after the final norm) through head k."""
    lm = bb.language_model(model.backbone)
    model.backbone.rope_deltas = None
    hs = model.backbone(**model._forward_kwargs(inputs), output_hidden_states=True).hidden_states
    h = hs[k] if k == model.num_layers else lm.norm(hs[k])  # the last entry is already normed
    rows = []
    for b in range(len(inputs)):
        positions = inputs.vector_index[b][inputs.vector_mask[b]]
        rows.append(torch.nn.functional.normalize(model.heads(k, h[b, positions]), dim=-1))
    return rows


def count_layer_calls(model):
    lm = bb.language_model(model.backbone)
    calls = [0] * len(lm.layers)
    handles = [layer.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, layer in enumerate(lm.layers)]
    return calls, handles


@torch.no_grad()
def test_early_exit_equals_full_forward_and_runs_only_k_layers(model):
    pages = model.processor.pages(page_images())
    queries = model.processor.queries(["QXB", "which page shows AB"])
    for k in model.exits:
        calls, handles = count_layer_calls(model)
        got_p = model.encode_pages(pages, exits=[k])
        got_q = model.encode_queries(queries, exits=[k])
        for h in handles:
            h.remove()
        assert calls == [2] * k + [0] * (model.num_layers - k), calls  # pages + queries, nothing after exit k
        assert list(got_p) == [k]
        for mv, inputs in ((got_p[k], pages), (got_q[k], queries)):
            for b, want in enumerate(reference_exit(model, inputs, k)):
                torch.testing.assert_close(mv.vectors[b][mv.mask[b]], want, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_vectors_sit_on_image_and_text_tokens(model):
    imgs = page_images()
    pages = model.processor.pages(imgs)
    out = model.encode_pages(pages, exits=[model.exits[0]])[model.exits[0]]
    image_id = model.backbone.config.image_token_id
    for b in range(len(imgs)):
        rows, cols = pages.grids[b].tolist()
        assert int(out.mask[b].sum()) == rows * cols == int((pages.input_ids[b] == image_id).sum())
        assert torch.all(pages.input_ids[b, pages.vector_index[b][pages.vector_mask[b]]] == image_id)
    tok = model.processor.tokenizer
    texts = ["QXB", "the revenue table of 2021", ""]
    q = model.encode_queries(model.processor.queries(texts), exits=[model.exits[0]])[model.exits[0]]
    assert q.grids is None
    assert q.mask.sum(1).tolist() == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    norms = q.vectors[q.mask].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


@torch.no_grad()
def test_batching_and_slicing_do_not_change_vectors(model):
    imgs = page_images(4)
    whole = model.processor.pages(imgs)
    full = model.encode_pages(whole)
    for start, stop in ((0, 1), (1, 3), (3, 4)):
        part = model.encode_pages(whole.slice(start, stop))
        alone = model.encode_pages(model.processor.pages(imgs[start:stop]))
        for e in model.exits:
            for b in range(stop - start):
                want = full[e].vectors[start + b][full[e].mask[start + b]]
                torch.testing.assert_close(part[e].vectors[b][part[e].mask[b]], want, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(alone[e].vectors[b][alone[e].mask[b]], want, rtol=1e-4, atol=1e-5)


def test_all_budgets_from_one_forward(model):
    pages = model.processor.pages(page_images(4, sizes=((112, 112),)))
    queries = model.processor.queries(["QXB", "ABC", "hello", "page"])
    calls, handles = count_layer_calls(model)
    total, per_budget = matryoshka_loss(model.encode_queries(queries), model.encode_pages(pages),
                                        budget_grid(model.exits, [128, 64, 16], [1, 2, 4]), LossConfig())
    for h in handles:
        h.remove()
    assert calls == [2] * model.num_layers  # one page forward and one query forward served 36 budgets
    assert len(per_budget) == 36 and torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.heads.parameters())
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def test_save_load_round_trip(model, tmp_path):
    pages = model.processor.pages(page_images())
    queries = model.processor.queries(["QXB", "the table"])
    out = model.save_pretrained(tmp_path / "saved")
    assert {p.suffix for p in out.iterdir()} <= {".json", ".safetensors", ".jinja", ".txt", ".model"}
    loaded = Retriever.from_pretrained(out).eval()
    assert loaded.exits == model.exits and loaded.processor.query_prefix == "Query: "
    for enc in ("encode_pages", "encode_queries"):
        inputs = pages if enc == "encode_pages" else queries
        a, b = getattr(model, enc)(inputs), getattr(loaded, enc)(inputs)
        for e in model.exits:
            assert torch.equal(a[e].vectors, b[e].vectors) and torch.equal(a[e].mask, b[e].mask)


@torch.no_grad()
def test_for_budget_variant(model, tmp_path):
    budget = Budget(model.exits[1], 32, 2)
    variant = model.for_budget(budget)
    n_full, n_var = (sum(p.numel() for p in m.parameters()) for m in (model, variant))
    # it keeps the heads of every exit up to its own (sliced to its width): a cascade's cheaper stages
    assert n_var < n_full and variant.num_layers == budget.layers
    assert variant.exits == [e for e in model.exits if e <= budget.layers] and variant.dim == 32
    path = variant.save_pretrained(tmp_path / "variant")
    cfg = json.loads((path / "retriever_config.json").read_text())
    assert cfg["default_budget"] == budget.as_dict() and cfg["dim"] == 32
    weights = load_file(path / "model.safetensors")
    layer_ids = {int(k.split("layers.")[1].split(".")[0]) for k in weights if "layers." in k and "vision" not in k
                 and "visual" not in k}
    assert layer_ids == set(range(budget.layers))
    assert load_file(path / "heads.safetensors")[f"{budget.layers}.weight"].shape[0] == 32
    reloaded = Retriever.from_pretrained(path).eval()
    assert reloaded.default_budget == budget and reloaded.num_layers == budget.layers
    imgs = page_images()
    full = model.encode_pages(model.processor.pages(imgs), exits=[budget.layers])[budget.layers]
    want = apply_budget(full, budget.dim, budget.pool).unpad()
    for got in (variant.embed(pages=imgs), reloaded.embed(pages=imgs, batch_size=2)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    qs = ["QXB", "the table"]
    want_q = apply_budget(model.encode_queries(model.processor.queries(qs), exits=[budget.layers])[budget.layers], 32, 1)
    for g, w in zip(reloaded.embed(queries=qs), want_q.unpad()):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        model.for_budget(Budget(model.num_layers + 1, 32, 1))


def test_attention_auto_is_sdpa_on_cpu_with_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.model.backbone"):
        assert bb.resolve_attn("auto") == "sdpa"
    assert len(caplog.records) == 1 and "sdpa" in caplog.records[0].getMessage()
    assert bb.resolve_attn("eager") == "eager"
    assert bb.resolve_dtype("auto") == torch.float32
