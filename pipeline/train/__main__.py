"""`python -m pipeline.train --config CONFIG.yaml [key=value ...]`: train the budget-elastic retriever.

Works the same under `deepspeed --num_gpus N --module pipeline.train ...`, `torchrun --nproc_per_node N -m
pipeline.train ...` and `srun python -m pipeline.train ...` (ranks come from the launcher's environment; the
deepspeed launcher's `--local_rank` argument is accepted and ignored). Exit codes: 0 done,
143 preempted (SIGTERM/SIGUSR1: a checkpoint was saved; rerun the same command to resume), 130 interrupted
(Ctrl-C: the MLflow run ends KILLED; rerun to resume from the last checkpoint), 1 error or refusal (one line:
another job holds train.output_dir, no checkpoint verifies or matches the data settings, bad data, disk full),
2 a bad config or command line (one line, before anything starts).
"""

import errno
import logging
import sys
import warnings
from pathlib import Path

from pipeline.cli import Command, flag, ignored, parse_cli
from pipeline.config import Config
from pipeline.layout.shards import MANIFEST
from pipeline.logs import setup_logging

CLI = Command(
    "python -m pipeline.train", "Train the budget-elastic retriever (DeepSpeed ZeRO-3, gradient cache, MLflow).",
    flags=(flag("--output-dir", key="train.output_dir", metavar="DIR"),
           ignored("--local_rank", help="set by the deepspeed launcher; LOCAL_RANK is read from the environment")),
    sections=("model", "loss", "data", "train", "tracking"),
)
log = logging.getLogger("pipeline.train")


def launch_problem(cfg: Config, world_size: int) -> str | None:
    """What makes this config unable to train on `world_size` ranks, found before anything heavy starts."""
    if cfg.data.global_batch % world_size:
        return f"data.global_batch {cfg.data.global_batch} does not split over {world_size} ranks"
    if cfg.model.dtype == "float16":
        return "model.dtype float16: training takes auto, float32 or bfloat16"
    if not Path(cfg.train.deepspeed_config).is_file():
        return f"train.deepspeed_config: no such file {cfg.train.deepspeed_config}"
    if not (Path(cfg.data.shards) / MANIFEST).is_file():
        return f"data.shards: no {MANIFEST} in {cfg.data.shards} (run the render job first)"
    return None


def learning_curve(cfg: Config):
    """retriever -> the function training calls every train.eval_every steps (evaluation's Curve)."""
    from pipeline.evaluate.curve import Curve
    from pipeline.layout.run import StagePaths

    shards = StagePaths.from_config(cfg).eval_shards
    return lambda retriever: Curve(cfg.train.curve_budgets, cfg.model, cfg.eval, shards, retriever)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(CLI, argv)
    from pipeline.ranks import env_from

    problem = launch_problem(cfg, env_from().world_size)
    if problem:
        sys.stderr.write(f"{CLI.prog}: config error: {problem}\n")
        return 2
    setup_logging()
    # DeepSpeed 0.19 calls torch.distributed APIs that torch 2.13 marks deprecated, once per collective.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\..* is deprecated", category=FutureWarning)
    from pipeline.layout.lock import DirectoryInUse
    from pipeline.layout.shards import ManifestError, ShardError, error_line
    from pipeline.train import dist
    from pipeline.train.checkpoint import CheckpointError
    from pipeline.train.loop import train
    from pipeline.train.tracking import fail_active_run

    try:
        return train(cfg, learning_curve(cfg))
    except DirectoryInUse as e:  # another job trains into this directory: touch nothing
        if dist.is_rank0():
            log.error("%s", e)
        return 1
    except CheckpointError as e:  # nothing trustworthy or compatible to resume from, or the disk filled
        fail_active_run(e)  # no-op for a refused start: those come before any MLflow run is opened
        log.error("%s", e)
        return 1
    except (ManifestError, ShardError) as e:  # data that is not what its manifest says: one line naming it
        fail_active_run(e)
        log.error("%s", error_line(e))
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C: not a failure of the run
        fail_active_run(e)
        log.error("interrupted: the MLflow run ends KILLED; rerun the same command to resume from the last "
                  "checkpoint")
        return 130
    except OSError as e:
        fail_active_run(e)
        if e.errno != errno.ENOSPC:
            raise
        log.error("no space left on the device of %s (%s); the checkpoints are intact: free space and rerun the "
                  "same command to resume", e.filename or cfg.train.output_dir, e.strerror)
        return 1
    except BaseException as e:
        fail_active_run(e)  # the MLflow run (if it started) ends FAILED, not FINISHED
        raise
    finally:
        dist.destroy()


if __name__ == "__main__":
    sys.exit(main())
