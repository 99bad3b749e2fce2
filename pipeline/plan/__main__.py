"""`python -m pipeline.plan --config CONFIG [--nodes N] [--gpus-per-node G] [--gpu-memory-gib M] [--json]
[key.sub=value ...]`: size a run before booking GPUs; exits 1 with one line when it does not fit."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.config import ConfigError, load_config
from pipeline.plan.report import H100_BF16_TFLOPS, Cluster, advice, make_plan, table

FLAGS = [  # flag, type, default, help
    ("--nodes", int, 8, "nodes in the job"),
    ("--gpus-per-node", int, 8, "GPUs per node"),
    ("--gpu-memory-gib", float, 80.0, "memory of one GPU"),
    ("--peak-tflops", float, H100_BF16_TFLOPS, "dense bf16 peak of one GPU for MFU (default: H100 SXM spec)"),
    ("--json", bool, False, "print one JSON object instead of the table"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML run config")
    for flag, tp, default, text in FLAGS:
        if tp is bool:
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, type=tp, default=default, help=f"{text} (default {default:g})")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.chunk_size=4")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
    cluster = Cluster(args.nodes, args.gpus_per_node, args.gpu_memory_gib, args.peak_tflops)
    try:
        plan = make_plan(cfg, cluster)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"plan: {e}\n")
    print(json.dumps(plan) if args.json else table(plan))
    if not plan["fits"]:
        print(advice(plan, cfg, cluster), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
