"""Training options on CPU: LoRA (merged on save), 8-/4-bit QLoRA steps, gradient checkpointing equivalence."""

import pytest
import torch
from PIL import Image

from pipeline.config import LoraConfig, LossConfig, ModelConfig
from pipeline.model.budgets import budget_grid
from pipeline.model.retriever import Retriever
from pipeline.train.loss import matryoshka_loss


def one_step(model):
    """One SGD step of the grid loss on 3 pairs; returns the names of the parameters it changed."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    imgs = [Image.new("RGB", (112, 112), (i * 60, 30 * i, 0)) for i in range(3)]
    pages, queries = model.processor.pages(imgs), model.processor.queries(["QXB", "ABC", "DEF"])
    model.train()
    total, _ = matryoshka_loss(model.encode_queries(queries), model.encode_pages(pages),
                               budget_grid(model.exits, [128, 32], [1, 2]), LossConfig())
    total.backward()
    opt.step()
    model.eval()
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.mark.parametrize("quantization", ["none", "8bit", "4bit"])
def test_lora_step_changes_only_adapters_and_heads(tiny_qwen2vl_dir, quantization, tmp_path):
    cfg = ModelConfig(name_or_path=str(tiny_qwen2vl_dir), quantization=quantization, lora=LoraConfig(r=4, dropout=0.0))
    model = Retriever.from_pretrained(tiny_qwen2vl_dir, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "lora_" in n or n.startswith("heads.")}
    changed = one_step(model)
    assert changed and changed <= trainable
    assert {n for n in changed if n.startswith("heads.")} == {n for n in trainable if n.startswith("heads.")}
    assert any("lora_B" in n for n in changed)  # B starts at zero, so the first step moves B (A gets no gradient)
    if quantization != "none":
        import bitsandbytes as bnb

        kind = bnb.nn.Linear8bitLt if quantization == "8bit" else bnb.nn.Linear4bit
        assert any(isinstance(m, kind) for m in model.backbone.modules())
        with pytest.raises(NotImplementedError):
            model.save_pretrained(tmp_path / "quantized")


def test_lora_merged_on_save(tiny_qwen2vl_dir, tmp_path):
    cfg = ModelConfig(name_or_path=str(tiny_qwen2vl_dir), lora=LoraConfig(r=4, dropout=0.0))
    model = Retriever.from_pretrained(tiny_qwen2vl_dir, cfg)
    one_step(model)
    one_step(model)  # now A and B are both non-zero: the adapters really change the outputs
    plain = Retriever.from_pretrained(model.save_pretrained(tmp_path / "merged")).eval()
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    # The same from a detached full state dict (how consolidated ZeRO-3 weights arrive): merged by hand.
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    from_dict = Retriever.from_pretrained(model.save_pretrained(tmp_path / "from-dict", state_dict=state)).eval()
    pages = model.processor.pages([Image.new("RGB", (112, 112), (90, 10, 200))])
    base = Retriever.from_pretrained(tiny_qwen2vl_dir).eval()
    with torch.no_grad():
        want, got = model.encode_pages(pages), plain.encode_pages(pages)
        untouched = base.encode_pages(pages)
        got_dict = from_dict.encode_pages(pages)
    for e in model.exits:
        torch.testing.assert_close(got[e].vectors, want[e].vectors, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_dict[e].vectors, want[e].vectors, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(untouched[4].vectors, want[4].vectors, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_qwen2vl_dir):
    grads = []
    for ckpt in (False, True):
        model = Retriever.from_pretrained(tiny_qwen2vl_dir, ModelConfig(name_or_path=str(tiny_qwen2vl_dir),
                                                                        gradient_checkpointing=ckpt))
        model.train()
        imgs = [Image.new("RGB", (112, 112), (i * 60, 30 * i, 0)) for i in range(2)]
        total, _ = matryoshka_loss(model.encode_queries(model.processor.queries(["QXB", "ABC"])),
                                   model.encode_pages(model.processor.pages(imgs)),
                                   budget_grid([2, 4], [32], [2]), LossConfig())
        total.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and any("layers.0." in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6)
