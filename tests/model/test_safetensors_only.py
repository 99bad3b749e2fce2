"""Weights load from safetensors only: a checkpoint that holds only a pickle file is refused, never unpickled."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import ModelConfig
from pipeline.model.retriever import Retriever


def test_pickle_only_checkpoint_is_refused(tiny_qwen2vl_dir, tmp_path):
    d = tmp_path / "pickled"
    shutil.copytree(tiny_qwen2vl_dir, d)
    state = load_file(str(d / "model.safetensors"))
    torch.save(state, d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        Retriever.from_pretrained(d, ModelConfig(name_or_path=str(d)))
    # the same weights as safetensors load (the refusal is about the format, not the content)
    shutil.copy(tiny_qwen2vl_dir / "model.safetensors", d / "model.safetensors")
    assert Retriever.from_pretrained(d, ModelConfig(name_or_path=str(d))).num_layers > 0
