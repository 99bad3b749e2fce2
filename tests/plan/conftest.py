"""Real-width, truncated-depth random checkpoints of the shipped architectures (small vocabulary: it changes no
activation), built once per session."""

import pytest

from pipeline.model.architectures import load_architecture
from pipeline.model.tiny import build_random_checkpoint

ARCHS = {"qwen2_vl": "Qwen/Qwen2-VL-2B-Instruct", "paligemma": "google/paligemma-3b-mix-448"}


@pytest.fixture(scope="session")
def narrow_vocab_checkpoints(tmp_path_factory):
    """{arch: dir}: 2 decoder layers and 2 vision blocks at the published widths, vocabulary 4096, PaliGemma at
    224 px (256 image tokens), Qwen2-VL pages up to 448 x 448."""
    out = {}
    for arch, name in ARCHS.items():
        config = load_architecture(name, text_layers=2, vision_layers=2)
        config.get_text_config().vocab_size = 4096
        if arch == "paligemma":
            config.vision_config.image_size = 224
        out[arch] = build_random_checkpoint(config, tmp_path_factory.mktemp(arch), max_pixels=448 * 448)
    return out
