"""`python -m pipeline.train --config CONFIG.yaml [key=value ...]`: train the budget-elastic retriever.

Works the same under `deepspeed --num_gpus N -m pipeline.train ...`, `torchrun --nproc_per_node N -m pipeline.train
...` and `srun python -m pipeline.train ...` (ranks come from the launcher's environment). Exit codes: 0 done,
143 preempted (SIGTERM/SIGUSR1: a checkpoint was saved; rerun the same command to resume), 1 error.
"""

import sys
import warnings

from pipeline.config import parse_cli
from pipeline.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
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
