"""Small pieces of pipeline.train: RNG state round trip (JSON), LR schedule, launcher argv, MLflow param keys."""

import json
import random

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.cli import parse
from pipeline.train.__main__ import CLI
from pipeline.train.checkpoint import rng_state, set_rng_state
from pipeline.train.optim import WarmupCosine, build_optimizer, param_groups
from pipeline.train.tracking import _param_key


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_survives_json():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _draw()
    state = json.loads(json.dumps(rng_state()))
    expected = [_draw() for _ in range(3)]
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(state)
    assert [_draw() for _ in range(3)] == expected


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=4, total=14)
    assert [round(f(s), 3) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert f(4) == 1.0 and abs(f(9) - 0.5) < 1e-9 and f(14) == 0.0 and f(20) == 0.0
    assert WarmupCosine(0, 10)(0) == 1.0  # no warm-up: the first step runs at the full rate


def test_param_groups_and_optimizers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    decay, rest = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])] and decay["weight_decay"] == 0.1
    assert len(rest["params"]) == 2 and rest["weight_decay"] == 0.0  # biases; the frozen norm weight left out
    assert type(build_optimizer(model, TrainConfig(optimizer="sgd"))).__name__ == "SGD"
    assert type(build_optimizer(model, TrainConfig(optimizer="adamw8bit"))).__name__ == "AdamW8bit"


def test_launcher_arguments_and_param_keys():
    for argv in (["--local_rank=1", "train.steps=3"], ["train.steps=3", "--local_rank", "0"]):  # the launcher's flag
        assert parse(CLI, argv)[0].train.steps == 3
    assert _param_key("experiment.recipes.3d+distill") == "experiment.recipes.3d_distill"
