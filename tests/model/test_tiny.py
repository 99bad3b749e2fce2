"""Tiny checkpoints: deterministic, loadable through the Auto classes, and codes tokenise into few tokens."""

from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoTokenizer

from pipeline.model.families import qwen2_vl
from pipeline.model.tiny import build_tiny_qwen2vl, train_tokenizer


def test_tiny_qwen2vl_is_deterministic_and_tokenises_codes(tiny_qwen2vl_dir, tmp_path):
    again = build_tiny_qwen2vl(tmp_path / "again")
    a, b = load_file(tiny_qwen2vl_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert set(a) == set(b)
    assert all(a[k].equal(b[k]) for k in a)
    tok = AutoTokenizer.from_pretrained(tiny_qwen2vl_dir)
    for code in ["QXB", "AAA", "ZZZ", " QXB"]:
        assert 1 <= len(tok(code).input_ids) <= 2, code
    listed = train_tokenizer(qwen2_vl.SPECIALS, ["QXB"], 2048)
    assert len(listed("QXB").input_ids) == 1  # a listed word is one token
    assert tok.convert_ids_to_tokens(tok("<|image_pad|>").input_ids) == ["<|image_pad|>"]
    from PIL import Image

    grid = AutoImageProcessor.from_pretrained(tiny_qwen2vl_dir)(images=[Image.new("RGB", (112, 112))])["image_grid_thw"]
    assert [list(map(int, g)) for g in grid] == [[1, 8, 8]]  # 8 x 8 patches -> 4 x 4 = 16 merged tokens


def test_cli_makes_every_synthetic_code_one_token(tmp_path):
    from data_prep.synth import code_vocab
    from demo.tiny import main

    main(["--out", str(tmp_path / "cli"), "synth.vocab_size=60", "synth.vocab_seed=3"])
    tok = AutoTokenizer.from_pretrained(tmp_path / "cli")
    assert all(len(tok(c).input_ids) == 1 for c in code_vocab(60, 3, 3))
