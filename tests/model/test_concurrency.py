"""Concurrent encodes answer each call from its own inputs: 8 threads x 400 mixed calls (20 different ones in turn:
queries and pages, every exit, two pools) through one Retriever equal the one-at-a-time answers bit for bit, and the
model's layer list is whole afterwards. Negative control: the same calls with the forward lock made a no-op (the
encode before the fix) give wrong answers or crash, so the comparison can fail."""

import contextlib
import copy

import pytest

from pipeline.model import backbone as bb
from pipeline.model.budgets import Budget
from pipeline.model.retriever import Retriever
from tests.helpers.threaded_calls import differing, distinct_inputs, hammer, repeated, same_tensors

pytestmark = pytest.mark.slow  # 400-call rounds from 8 threads


@pytest.fixture(scope="module")
def model(tiny_qwen2vl_dir):
    return Retriever.from_pretrained(tiny_qwen2vl_dir).eval()


def distinct_calls(model) -> list:
    """20 different calls: queries and pages (10 each, all different), every exit, both pools."""
    queries, pages = distinct_inputs()
    calls = []
    for i in range(20):
        budget = Budget(model.exits[i % len(model.exits)], model.dim, 1 + (i // 2) % 2)
        calls.append(("queries", queries[i], budget) if i % 2 == 0 else ("pages", pages[i], budget))
    return calls


def encode_one(model):
    return lambda c: model.embed(**{c[0]: [c[1]]}, budget=c[2])[0]


@pytest.fixture(scope="module")
def calls_and_reference(model):
    """The 400 calls (the 20 distinct ones, repeated in turn) and each one's answer made one at a time."""
    return repeated(distinct_calls(model), encode_one(model), 400)


def test_eight_threads_answer_like_one_at_a_time(model, calls_and_reference):
    calls, reference = calls_and_reference
    layers = bb.language_model(model.backbone).layers
    answers = hammer(encode_one(model), calls, threads=8)
    assert differing(answers, reference, same_tensors) == []
    assert bb.language_model(model.backbone).layers is layers and model.num_layers == 4


def test_negative_control_without_the_lock_answers_wrongly(model, calls_and_reference):
    """The encode as it was (hooks and the cut layer list shared, no lock): some of the 400 answers are another
    call's vectors or a crash. It can even leave the layer list cut for good, so it runs on a copy."""
    unlocked = copy.deepcopy(model)
    assert unlocked._forward_lock is not model._forward_lock  # a copy gets its own lock
    unlocked._forward_lock = contextlib.nullcontext()
    calls, reference = calls_and_reference
    bad = []
    for _ in range(3):  # a race: retried so the control itself cannot flake
        bad = differing(hammer(encode_one(unlocked), calls, threads=8), reference, same_tensors)
        if bad:
            break
    assert bad, "the unlocked encode answered every concurrent call correctly: the test could not catch the race"
