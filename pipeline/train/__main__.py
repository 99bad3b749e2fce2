"""`python -m pipeline.train --config CONFIG.yaml [key=value ...]`: train the budget-elastic retriever.

Works the same under `deepspeed --num_gpus N --module pipeline.train ...`, `torchrun --nproc_per_node N -m
pipeline.train ...` and `srun python -m pipeline.train ...` (ranks come from the launcher's environment; the
deepspeed launcher's `--local_rank` argument is accepted and ignored). Exit codes: 0 done,
143 preempted (SIGTERM/SIGUSR1: a checkpoint was saved; rerun the same command to resume), 1 error.
"""

import sys
import warnings

from pipeline.config import parse_cli
from pipeline.logs import setup_logging


def strip_local_rank(argv: list[str]) -> list[str]:
    """Drop `--local_rank=N` / `--local_rank N` (added by the deepspeed launcher; LOCAL_RANK is in the env too)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--local_rank":
            skip = True
        elif not arg.startswith("--local_rank="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = strip_local_rank(sys.argv[1:] if argv is None else argv)
    cfg = parse_cli(argv, description=__doc__.splitlines()[0], shortcuts={"--output-dir": "train.output_dir"})
    setup_logging()
    # DeepSpeed 0.19 calls torch.distributed APIs that torch 2.13 marks deprecated, once per collective.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\..* is deprecated", category=FutureWarning)
    from pipeline.train import dist
    from pipeline.train.loop import train

    try:
        return train(cfg)
    finally:
        dist.destroy()


if __name__ == "__main__":
    sys.exit(main())
