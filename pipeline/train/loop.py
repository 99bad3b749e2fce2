"""The training loop: build_* set-up functions, then `train()` - steps, logging, checkpoints, preemption, export.

A learning curve comes from the caller (the entry point knows evaluation): `measure_for(retriever)` returns the
function that scores the current weights every train.eval_every steps.

On SIGTERM or SIGUSR1 the handler only sets a flag; at the next step boundary every rank agrees, saves a
checkpoint and `train()` returns EXIT_PREEMPTED (143). Rerunning the same command resumes from the latest
checkpoint: same batches, same MLflow run.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from pipeline.data.batch import Collate
from pipeline.data.stream import TrainStream, make_loader
from pipeline.gc_phases import setting_up
from pipeline.layout.lock import DirectoryInUse, DirLock, claim
from pipeline.layout.run import RunPaths
from pipeline.layout.shards import split_shards
from pipeline.train import dist
from pipeline.train.checkpoint import Checkpointer, CheckpointError
from pipeline.train.config import TrainingTree
from pipeline.train.engine import build_engine, import_deepspeed
from pipeline.train.step import Encoder, StepContext, StepOutput, train_step
from pipeline.train.tracking import Tracker

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 143  # checkpoint saved after SIGTERM/SIGUSR1; rerun the same command to resume
Measure = Callable[[Any], dict[str, float]]  # retriever -> {metric: value} of its current weights (rank 0 logs)


@dataclass
class Run:
    """The live objects of one training (not config: built by build_run)."""

    cfg: TrainingTree
    engine: Any
    retriever: Any
    stream: TrainStream
    ctx: StepContext
    checkpointer: Checkpointer
    tracker: Tracker
    lock: DirLock  # the output directory's, held by rank 0 for the whole run
    measure: Measure | None = None
    step: int = 0
    skipped: int = 0
    bad_samples: int = 0  # unreadable samples skipped (data.skip_bad_samples): at indexing, then in batches
    stop: dict = field(default_factory=lambda: {"signal": None})


def build_model(cfg: TrainingTree) -> torch.nn.Module:
    """The Retriever named by `cfg.model` (LoRA, quantisation, attention and gradient checkpointing per the model
    config: pipeline.model applies them)."""
    from pipeline.model.retriever import Retriever

    return Retriever.from_pretrained(cfg.model.name_or_path, cfg.model)


def build_stream(cfg: TrainingTree, processor: Any = None) -> TrainStream:
    """This rank's share of the training stream (shards verified first), with the model's processor as the
    collate (set later when the model is not built yet)."""
    shards = split_shards(cfg.data.shards, cfg.data.split)
    return TrainStream(shards, cfg.data.global_batch, dist.world_size(), dist.rank(), cfg.data.seed,
                       transform=Collate(processor) if processor else None, verify=cfg.data.verify_checksums,
                       skip_bad=cfg.data.skip_bad_samples)


def build_step_context(cfg: TrainingTree, engine: Any, retriever: Any) -> StepContext:
    from pipeline.model.budgets import budget_grid
    from pipeline.train.loss import matryoshka_loss, select_budgets

    grid = budget_grid(retriever.exits, cfg.model.widths, cfg.model.pools)

    def loss_fn(q, p, budgets, labels, step):
        return matryoshka_loss(q, p, budgets, cfg.loss, labels=labels, step=step)

    return StepContext(engine, loss_fn, lambda step: select_budgets(grid, cfg.loss, step), cfg.train.chunk_size,
                       grad_cache=cfg.train.grad_cache)


def install_signal_handlers(stop: dict) -> None:
    """SIGTERM / SIGUSR1 -> set a flag; the loop checkpoints at the next step boundary (never inside a step)."""

    def handler(signum, frame):
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, handler)


def claim_output_dir(output_dir: str) -> DirLock:
    """Rank 0 takes the output directory's lock for the run; every rank learns the verdict, so a refused start
    ends every rank (DirectoryInUse, naming the holder on rank 0) before anything there is read or written."""
    lock, refused = DirLock(Path(output_dir), None), None
    if dist.is_rank0():
        try:
            lock = claim(output_dir, "training")
        except DirectoryInUse as e:
            refused = e
    if dist.any_ranks(refused is not None)[0]:
        raise refused or DirectoryInUse(f"{output_dir} is in use by another job (rank 0 names it)")
    return lock


def check_resumable(checkpointer: Checkpointer, path: Path, stream: TrainStream) -> None:
    """CheckpointError (one line) when the run cannot continue from checkpoint `path` with this config's data and
    batch settings: found from its trainer_state.json before the model loads or MLflow is touched."""
    why = stream.resume_problem(checkpointer.trainer_state(path)["stream"])
    if why:
        raise CheckpointError(f"cannot resume from {path}: {why}. Resume with the checkpoint's settings, or train "
                              "into a new train.output_dir")


def build_run(cfg: TrainingTree, measure_for: Callable[[Any], Measure] | None = None) -> Run:
    """Process group, output-directory lock, model, engine, stream, resume from the latest checkpoint, tracker,
    the learning curve's measure (set up before training starts, so a bad eval set fails first), signal handlers.
    Refusals (directory in use, nothing trustworthy or compatible to resume, bad data) come before the model
    loads and before MLflow is touched."""
    dist.init(timeout_s=cfg.train.dist_timeout_s)
    lock = claim_output_dir(cfg.train.output_dir)
    checkpointer = Checkpointer(cfg.train.output_dir, cfg.train.keep_checkpoints)
    resume = checkpointer.find()  # before the model loads: refusing to resume costs seconds, not minutes
    stream = build_stream(cfg)  # before the model: data that does not verify costs seconds, not minutes
    if resume is not None:
        check_resumable(checkpointer, resume, stream)
    torch.manual_seed(cfg.train.seed + dist.rank())
    retriever = build_model(cfg)
    measure = measure_for(retriever) if measure_for and cfg.train.eval_every else None
    engine, ds_config = build_engine(Encoder(retriever), cfg, dist.world_size())
    stream.transform = Collate(retriever.processor)
    state = checkpointer.load(engine, resume) if resume is not None else None
    run = Run(cfg, engine, retriever, stream, build_step_context(cfg, engine, retriever), checkpointer,
              Tracker(cfg, ds_config, cfg.train.output_dir, resumed_step=state["step"] if state else 0), lock,
              measure)
    run.bad_samples = stream.bad_at_index
    if state is not None:
        stream.load_state_dict(state["stream"])
        run.step, run.skipped = state["step"], state["skipped"]
        run.bad_samples += state.get("bad_in_batches", 0)
    install_signal_handlers(run.stop)
    return run


def log_step(run: Run, out: StepOutput, lr: float, seconds: float, steps: int) -> None:
    """Reduce this step's losses over ranks (one all-reduce) and log them (rank 0 writes MLflow and metrics.jsonl)."""
    names = ["loss"] + [f"loss/{budget}" for budget in out.per_budget]
    values = dist.mean_over_ranks(torch.stack([out.loss, *out.per_budget.values()]).float()).tolist()
    metrics = {**dict(zip(names, values)), "lr": lr, "skipped_steps": run.skipped, "bad_samples": run.bad_samples,
               "samples_per_s": run.cfg.data.global_batch * steps / max(seconds, 1e-9)}
    norm = run.engine.get_global_grad_norm() if not out.skipped else None
    if norm is not None:
        metrics["grad_norm"] = float(norm)
    record(run, metrics)


def record(run: Run, metrics: dict[str, float]) -> None:
    """Metrics of the current step to MLflow and metrics.jsonl (rank 0)."""
    run.tracker.log_metrics(metrics, step=run.step)
    if dist.is_rank0():
        with open(RunPaths(Path(run.cfg.train.output_dir)).metrics, "a") as f:
            f.write(json.dumps({"step": run.step, **metrics}) + "\n")


def save(run: Run) -> None:
    state = {"stream": run.stream.state_dict(), "skipped": run.skipped,
             "bad_in_batches": run.bad_samples - run.stream.bad_at_index}
    run.checkpointer.save(run.engine, run.step, state)
    run.tracker.write_run_json(run.step)


def export_final(run: Run) -> Path:
    """Consolidate the ZeRO-3 partitions and write `<output_dir>/final` with the Retriever's save_pretrained."""
    deepspeed = import_deepspeed()
    out = RunPaths(Path(run.cfg.train.output_dir)).final
    params = list(run.retriever.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=hasattr(params[0], "ds_id")):
        if dist.is_rank0():
            run.retriever.save_pretrained(out)
    dist.barrier()
    return out


def train(cfg: TrainingTree, measure_for: Callable[[Any], Measure] | None = None) -> int:
    """Train to `cfg.train.steps` (resuming if a checkpoint exists) holding the output directory's lock, measuring
    `measure_for(retriever)` every train.eval_every steps; returns the process exit code."""
    with setting_up():  # the steps' garbage collections then leave the libraries, model and engine alone
        run = build_run(cfg, measure_for)
    with run.lock:
        return run_steps(run)


def run_steps(run: Run) -> int:
    """The loop: steps, logging, checkpoints, preemption, then the final export; returns the exit code."""
    cfg = run.cfg
    bar = tqdm(total=cfg.train.steps, initial=run.step, disable=not dist.is_rank0(), desc="train")
    device, tick, since = dist.device(), time.perf_counter(), 0
    batches = iter(make_loader(run.stream, cfg.data.num_workers))
    while run.step < cfg.train.steps:
        batch = next(batches)
        assert batch.step == run.step, f"stream at step {batch.step}, loop at {run.step}"
        lr = run.engine.get_lr()[0]
        out = train_step(run.ctx, batch.to(device), run.step, stop=run.stop["signal"] is not None)
        run.skipped += int(out.skipped)
        run.bad_samples += batch.bad_samples
        if out.skipped:
            log.warning("step %d: non-finite loss on some rank, update skipped (%d so far)", run.step, run.skipped)
        since += 1
        run.step += 1
        run.stream.start_step = run.step
        bar.update(1)
        if run.step % cfg.train.log_every == 0 or out.skipped or run.step == cfg.train.steps:
            log_step(run, out, lr, time.perf_counter() - tick, since)
            bar.set_postfix(loss=f"{float(out.loss):.4f}")
            tick, since = time.perf_counter(), 0
        if run.measure and (run.step % cfg.train.eval_every == 0 or run.step == cfg.train.steps):
            began = time.perf_counter()
            record(run, run.measure(run.retriever))
            tick += time.perf_counter() - began  # samples_per_s counts training time only
        stopping = out.stop
        if stopping or run.step % cfg.train.checkpoint_every == 0 or run.step == cfg.train.steps:
            save(run)
        if stopping:
            log.warning("preempted: checkpoint at step %d saved, exiting %d", run.step, EXIT_PREEMPTED)
            run.tracker.finish(run.step, status="KILLED")
            return EXIT_PREEMPTED
    bar.close()
    final = export_final(run)
    run.tracker.log_metrics({"steps": run.step, "skipped_steps": run.skipped, "bad_samples": run.bad_samples},
                            step=run.step)
    run.tracker.finish(run.step)
    log.info("done: %d steps, %d skipped, weights in %s", run.step, run.skipped, final)
    return 0
