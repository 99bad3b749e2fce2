"""Tiny random Qwen2-VL / PaliGemma checkpoints with locally trained tokenizers, for tests and the demo (no hub).

They are plain VLM checkpoints, loaded through the same from_pretrained path as real weights.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path

import torch

from pipeline.model.families import of_config, paligemma, qwen2_vl

SENTENCES = [
    "Find the page that shows this code.", "Which page mentions the quarterly revenue table?",
    "Query: what is written in the top row?", "A chart of sales by region and year, 2019 to 2024.",
    "The quick brown fox jumps over the lazy dog.", "Invoice number, date, total amount due.",
]


def _corpus(words: list[str] | None) -> list[str]:
    """Training text: every uppercase letter pair (a 3-letter code is then <= 2 tokens), with and without a
    leading space, the caller's `words` (e.g. the synthetic code vocabulary: one token each) and a few sentences."""
    pairs = ["".join(p) for p in itertools.product(string.ascii_uppercase, repeat=2)]
    items = [x for p in pairs for x in (p, " " + p)] * 2
    for w in words or []:
        items += [w, " " + w] * 4
    return items + SENTENCES * 4 + list(string.ascii_letters + string.digits + string.punctuation)


def train_tokenizer(specials: list[str], words: list[str] | None, vocab_size: int, **kwargs):
    """A byte-level BPE trained here, wrapped as a PreTrainedTokenizerFast (specials take ids 0..len-1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(words), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def build_tiny_qwen2vl(
    out_dir: str | Path,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    vision_depth: int = 2,
    vision_width: int = 128,
    intermediate: int = 256,
    vocab_size: int = 2048,
    words: list[str] | None = None,
    seed: int = 0,
    max_pixels: int = 224 * 224,
    **overrides,
) -> Path:
    """Write a random Qwen2-VL (Qwen2VLForConditionalGeneration, a plain VLM checkpoint like a hub model) with
    tokenizer and image processor to `out_dir`. A 112x112 page becomes 16 image tokens (4 x 4 merged grid).
    `overrides` go to the text config. Deterministic in `seed`; leaves the caller's RNG untouched."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(qwen2_vl.SPECIALS, words, vocab_size, **qwen2_vl.TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in qwen2_vl.SPECIALS}
    head_dim = hidden // heads
    section = [head_dim // 4, head_dim // 8, head_dim // 8]  # sums to head_dim / 2, as mrope needs
    text = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    text.update(overrides)
    vision = dict(depth=vision_depth, embed_dim=vision_width, hidden_size=hidden, num_heads=4, mlp_ratio=2,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True,
    )
    _, image_processor = qwen2_vl.prepare_random(config, tokenizer.get_vocab(), max_pixels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def build_tiny_paligemma(
    out_dir: str | Path,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 1,
    image_size: int = 56,
    patch_size: int = 14,
    vocab_size: int = 2048,
    words: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a random PaliGemma (SigLIP vision tower + Gemma decoder) with tokenizer and image processor to
    `out_dir`; a page becomes (image_size / patch_size)^2 image tokens (16 for the defaults)."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(paligemma.SPECIALS, words, vocab_size, **paligemma.TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in paligemma.SPECIALS}
    text = dict(
        model_type="gemma", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
        max_position_embeddings=4096, pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"],
    )
    vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, image_size=image_size, patch_size=patch_size, projection_dim=hidden)
    config = PaliGemmaConfig(
        text_config=text, vision_config=vision, image_token_index=ids["<image>"], projection_dim=hidden,
        hidden_size=hidden, vocab_size=len(tokenizer),
    )
    config.vision_config.projection_dim = hidden
    _, image_processor = paligemma.prepare_random(config, tokenizer.get_vocab(), 0)  # sets image_seq_length
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaliGemmaForConditionalGeneration(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def build_random_checkpoint(
    config,
    out_dir: str | Path,
    words: list[str] | None = None,
    seed: int = 0,
    max_pixels: int = 1_003_520,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Path:
    """Write a random-weight checkpoint of any supported architecture `config` (e.g. a shipped published config,
    full or truncated depth: pipeline.model.architectures) with a tokenizer trained here and the family's image
    processor. Every width and the vocabulary size stay those of `config`; only the special-token ids move to the
    local tokenizer's. PaliGemma pages are `vision_config.image_size` square; Qwen2-VL pages at most `max_pixels`.
    Deterministic in `seed`; leaves the caller's RNG untouched."""
    from transformers import AutoModelForImageTextToText

    family = of_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(family.SPECIALS, words, 2048, **family.TOKENS)
    if len(tokenizer) > config.get_text_config().vocab_size:
        raise ValueError(f"the local tokenizer ({len(tokenizer)} tokens) exceeds the config's vocabulary")
    # The published special-token ids are past the local tokenizer's end: point them at its own.
    (pad, bos, eos), image_processor = family.prepare_random(config, tokenizer.get_vocab(), max_pixels)
    for obj in (config, config.get_text_config()):
        obj.pad_token_id, obj.bos_token_id, obj.eos_token_id = pad, bos, eos
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out
