"""The honest test of the step: 2 CPU processes under ZeRO-3 with gradient caching (chunk < local batch) make one
optimizer step; one process computing the plain full-batch loss from the same initial weights (gathered from the
engine) with a plain optimizer reaches the same weights. A gather without gradient flow must fail the comparison."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.launch import run, torchrun_cmd
from tests.train.toy import Inputs, ToyRetriever, global_batch, toy_loss

ROOT = Path(__file__).resolve().parents[2]
LR = 0.5


def ds_test_config(out: Path) -> None:
    """zero3.json with the equivalence-test knobs: tiny parameters really partitioned."""
    ds = json.loads((ROOT / "deepspeed_configs" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (out / "zero3_test.json").write_text(json.dumps(ds))


def run_workers(out: Path, modes: str, kind: str = "toy", extra: tuple = ()) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ds_test_config(out)
    cmd = torchrun_cmd(2, "tests/train/_step_worker.py", str(out), "--kind", kind, "--modes", modes,
                       "--lr", str(LR), *extra)
    proc = run(cmd, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:]


def sgd_reference(model, init, loss_value_fn):
    """Load `init`, one plain full-batch SGD step; returns (updated state, loss)."""
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss = loss_value_fn(model)
    loss.backward()
    opt.step()
    return {n: p.detach() for n, p in model.named_parameters()}, float(loss)


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy")
    run_workers(base, "good,bad,nan")
    return base


def test_toy_zero3_grad_cache_step_equals_plain_step(toy_runs):
    init = load_file(str(toy_runs / "good" / "init.safetensors"))
    q, p = global_batch(8)
    ref, ref_loss = sgd_reference(ToyRetriever(), init, lambda m: toy_loss(m.encode_queries(Inputs(q)),
                                                                           m.encode_pages(Inputs(p)), None)[0])
    good = load_file(str(toy_runs / "good" / "after.safetensors"))
    moved = max_diff(ref, init)
    assert moved > 1e-3  # the step really changed the weights
    assert max_diff(good, ref) < 1e-6 + 1e-4 * moved
    losses = [json.load(open(toy_runs / "good" / f"loss.{r}.json"))["loss"] for r in range(2)]
    assert abs(sum(losses) / 2 - ref_loss) < 1e-5  # mean of the ranks' losses = the global-batch loss
    bad = load_file(str(toy_runs / "bad" / "after.safetensors"))
    assert max_diff(bad, ref) > 100 * (1e-6 + 1e-4 * moved)  # negative control: the comparison catches it


def test_non_finite_loss_on_one_rank_skips_the_update_everywhere(toy_runs):
    init = load_file(str(toy_runs / "nan" / "init.safetensors"))
    after = load_file(str(toy_runs / "nan" / "after.safetensors"))
    assert max_diff(after, init) == 0.0
    results = [json.load(open(toy_runs / "nan" / f"loss.{r}.json")) for r in range(2)]
    assert [r["skipped"] for r in results] == [True, True]
    assert results[0]["loss"] == results[0]["loss"]  # rank 0's own loss was finite, it still skipped


@pytest.fixture(scope="module")
def qwen_runs(tmp_path_factory, tiny_qwen2vl_dir):
    base = tmp_path_factory.mktemp("qwen")
    extra = ("--model-dir", str(tiny_qwen2vl_dir), "--global-batch", "8", "--chunk", "3")
    run_workers(base, "good,bad", kind="qwen", extra=extra)
    return base


def test_qwen2vl_zero3_grad_cache_step_equals_plain_step(qwen_runs, tiny_qwen2vl_dir):
    from tests.train import qwen_case

    init = load_file(str(qwen_runs / "good" / "init.safetensors"))
    ref_model = qwen_case.model(str(tiny_qwen2vl_dir))
    q, p = qwen_case.inputs(ref_model, 8)
    budgets = qwen_case.budgets(ref_model)
    assert len(budgets) == 8 and budgets[0].layers == 4  # 2 exits x 2 widths x 2 pools, full budget first

    def plain_loss(m):
        return qwen_case.loss(m.encode_queries(q), m.encode_pages(p), budgets)[0]

    with torch.no_grad():
        for name, prm in ref_model.named_parameters():
            prm.copy_(init[name])
    ref = {}
    opt = torch.optim.SGD(ref_model.parameters(), lr=LR)
    loss = plain_loss(ref_model)
    loss.backward()
    opt.step()
    ref = {n: prm.detach() for n, prm in ref_model.named_parameters()}
    good = load_file(str(qwen_runs / "good" / "after.safetensors"))
    assert set(good) == set(ref)
    moved = max_diff(ref, init)
    assert moved > 1e-3
    err = max_diff(good, ref)
    assert err < 1e-5 + 1e-3 * moved, (err, moved)
    losses = [json.load(open(qwen_runs / "good" / f"loss.{r}.json"))["loss"] for r in range(2)]
    assert abs(sum(losses) / 2 - loss.item()) < 1e-4
    bad = load_file(str(qwen_runs / "bad" / "after.safetensors"))
    assert max_diff(bad, ref) > 10 * err and max_diff(bad, ref) > 1e-5 + 1e-3 * moved
