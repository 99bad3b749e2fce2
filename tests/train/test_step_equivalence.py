"""The honest test of the step: several SGD steps through the real train_step under DeepSpeed (ZeRO-3 on 1, 2 and 3
CPU ranks, ZeRO-2 on 2), gradient-cached with different chunkings, plain, with LoRA and with gradient checkpointing,
end on the weights (every tensor) and per-step gradient norms of a single process computing the plain full-batch
loss in plain PyTorch. Pages differ in size between ranks, budgets are sampled per step (exit heads go unused on some
steps), and the negative controls (a gather without gradient flow, a skipped page replay) must fail the comparison.

SGD without weight decay, so each update is proportional to the gradient (the learning rate follows the run's
schedule, warm-up 0 then cosine over STEPS, in both); an unused parameter's gradient is zero.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.train.optim import WarmupCosine
from tests.helpers import qwen_case
from tests.helpers.procs import ROOT, run, torchrun_cmd

LR, STEPS = 0.005, 4
LAUNCHES = {  # (zero stage, ranks) -> modes; a mode is name[:chunk] (see _step_worker)
    (3, 2): "cached:2,cached:1,plain,lora:2,ckpt:2,nogather:2,skipreplay:2,nan:2",
    (3, 3): "cached:1,plain",
    (3, 1): "cached:4,plain",
    (2, 2): "cached:2,plain",
}
GOOD = ("cached", "plain", "lora", "ckpt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_qwen2vl_dir):
    """Every run of LAUNCHES, once, in one launch per world size: {(stage, ranks): output dir}."""
    out, per_world = {}, {}
    for (stage, ranks), modes in LAUNCHES.items():
        base = tmp_path_factory.mktemp(f"z{stage}-w{ranks}")
        ds = json.loads((ROOT / "deepspeed_configs" / f"zero{stage}.json").read_text())
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # tiny tensors really partitioned
        (base / "ds.json").write_text(json.dumps(ds))
        per_world.setdefault(ranks, []).extend(["--job", str(base), str(base / "ds.json"), modes])
        out[(stage, ranks)] = base
    for ranks, runs_args in per_world.items():
        worker = ["tests/train/_step_worker.py", *runs_args, "--model-dir", str(tiny_qwen2vl_dir),
                  "--steps", str(STEPS), "--lr", str(LR)]
        # One rank needs no launcher: pipeline.train.dist reads a world of one from an environment without ranks.
        cmd = torchrun_cmd(ranks, *worker) if ranks > 1 else [sys.executable, *worker]
        proc = run(cmd, timeout=420)
        assert proc.returncode == 0, proc.stdout[-4000:]
    return out


_REFERENCES: dict = {}


def reference(model_dir: Path, variant: str, init: dict, skip: tuple = ()) -> tuple[dict, list, list]:
    """Plain PyTorch on one process: STEPS SGD steps of the full-batch loss from `init`, skipping steps in `skip`.
    Returns (final weights, per-step loss, per-step gradient norm over the trainable parameters)."""
    key = (variant, skip, tuple(float(v.double().sum()) for v in init.values()))
    if key in _REFERENCES:
        return _REFERENCES[key]
    model = qwen_case.model(str(model_dir), variant).train()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.copy_(init[name])
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(0, STEPS))
    q, p = qwen_case.inputs(model)
    losses, norms = [], []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss = qwen_case.loss(model.encode_queries(q), model.encode_pages(p), qwen_case.budgets(step))[0]
        losses.append(float(loss.detach()))
        if step in skip:
            norms.append(None)
            continue  # a skipped step makes no optimizer step: the schedule does not advance either
        loss.backward()
        norms.append(float(torch.sqrt(sum((prm.grad.double() ** 2).sum() for prm in trainable))))
        opt.step()
        schedule.step()
    _REFERENCES[key] = ({n: prm.detach().clone() for n, prm in model.named_parameters()}, losses, norms)
    return _REFERENCES[key]


def load(base: Path, spec: str):
    d = base / spec.replace(":", "-c")
    return load_file(str(d / "init.safetensors")), load_file(str(d / "final.safetensors")), \
        json.loads((d / "trace.json").read_text())


def errors(final: dict, ref: dict, init: dict) -> dict[str, tuple[float, float]]:
    """Per tensor: (max |final - ref|, its tolerance: 1e-6 + 1e-3 x how far the reference moved it)."""
    assert set(final) == set(ref)
    return {n: (float((final[n] - ref[n]).abs().max()), 1e-6 + 1e-3 * float((ref[n] - init[n]).abs().max()))
            for n in ref}


def test_budgets_leave_an_exit_unused_on_some_steps():
    exits = [{b.layers for b in qwen_case.budgets(s)} for s in range(STEPS)]
    assert exits[0] == {2, 4} and {4} in exits[1:-1] and exits[-1] == {2, 4}, exits  # used, unused, used again
    assert len(qwen_case.budgets(0)) == 8  # the whole width x depth x count grid


@pytest.mark.parametrize("launch,spec", [(k, m) for k, modes in LAUNCHES.items() for m in modes.split(",")
                                         if m.split(":")[0] in GOOD])
def test_steps_equal_the_plain_full_batch_reference(runs, tiny_qwen2vl_dir, launch, spec):
    variant = spec.split(":")[0] if spec.split(":")[0] in qwen_case.VARIANTS else "base"
    init, final, trace = load(runs[launch], spec)
    ref, ref_losses, ref_norms = reference(tiny_qwen2vl_dir, variant, init)
    err = errors(final, ref, init)
    bad = {n: e for n, e in err.items() if e[0] > e[1]}
    assert not bad, sorted(bad.items(), key=lambda kv: -kv[1][0] / kv[1][1])[:5]
    moved = {n: float((ref[n] - init[n]).abs().max()) for n in ref}
    if variant != "lora":  # the vision tower (frozen under LoRA) really learns, so its gradient is checked
        assert min(v for n, v in moved.items() if n.startswith("backbone.visual.merger")) > 1e-4
    assert not any(t["skipped"] for t in trace)
    assert [t["loss"] for t in trace] == pytest.approx(ref_losses, rel=1e-5)
    assert [t["grad_norm"] for t in trace] == pytest.approx(ref_norms, rel=1e-4)


@pytest.mark.parametrize("launch", list(LAUNCHES))
def test_cached_equals_plain_in_the_same_world(runs, launch):
    """train.grad_cache=true vs false under the same DeepSpeed world: same weights and gradient norms per step."""
    cached = [m for m in LAUNCHES[launch].split(",") if m.startswith("cached")][0]
    _, a, ta = load(runs[launch], cached)
    init, b, tb = load(runs[launch], "plain")
    for n in a:
        assert float((a[n] - b[n]).abs().max()) <= 1e-6 + 1e-3 * float((b[n] - init[n]).abs().max()), n
    assert [t["grad_norm"] for t in ta] == pytest.approx([t["grad_norm"] for t in tb], rel=1e-4)


@pytest.mark.parametrize("spec", ["nogather:2", "skipreplay:2"])
def test_negative_controls_fail_the_comparison(runs, tiny_qwen2vl_dir, spec):
    init, final, trace = load(runs[(3, 2)], spec)
    ref, _, ref_norms = reference(tiny_qwen2vl_dir, "base", init)
    err = errors(final, ref, init)
    worst = max(e / tol for e, tol in err.values())
    assert worst > 10, worst  # the broken step is far outside the tolerance the good ones meet
    assert [t["grad_norm"] for t in trace] != pytest.approx(ref_norms, rel=1e-4)


def test_non_finite_loss_on_one_rank_skips_that_step_everywhere(runs, tiny_qwen2vl_dir):
    init, final, trace = load(runs[(3, 2)], "nan:2")
    assert [t["skipped"] for t in trace] == [False, True, False, False]
    ref, _, ref_norms = reference(tiny_qwen2vl_dir, "base", init, skip=(1,))
    err = errors(final, ref, init)
    assert all(e <= tol for e, tol in err.values())
    assert trace[1]["grad_norm"] is None and ref_norms[1] is None
    kept = [0, 2, 3]
    assert [trace[s]["grad_norm"] for s in kept] == pytest.approx([ref_norms[s] for s in kept], rel=1e-4)


def test_training_wrapper_turns_activation_checkpointing_on(tiny_qwen2vl_dir):
    """transformers loads the backbone in eval mode, where its layers skip checkpointing: the wrapper the engine
    trains must switch it to training mode, or model.gradient_checkpointing saves no memory."""
    from pipeline.train.step import Encoder

    def count_checkpointed(model, wrap: bool) -> int:
        calls = []
        for module in model.modules():
            if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
                inner = module._gradient_checkpointing_func
                module._gradient_checkpointing_func = lambda *a, inner=inner, **k: calls.append(1) or inner(*a, **k)
        q, p = qwen_case.inputs(model)
        run = Encoder(model) if wrap else (lambda q, p, e: (model.encode_queries(q, e), model.encode_pages(p, e)))
        run(q.slice(0, 2), p.slice(0, 2), [2, 4])
        return len(calls)

    assert count_checkpointed(qwen_case.model(str(tiny_qwen2vl_dir), "ckpt"), wrap=False) == 0  # as loaded: eval
    # Wrapped: both vision blocks and the 4 decoder layers, for queries (decoder only) and pages.
    assert count_checkpointed(qwen_case.model(str(tiny_qwen2vl_dir), "ckpt"), wrap=True) == 2 + 4 + 4
