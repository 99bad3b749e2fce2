"""`python -m pipeline.plan --config CONFIG [--nodes N] [--gpus-per-node G] [--gpu-memory-gib M] [--json]
[key.sub=value ...]`: size a run before booking GPUs; exits 1 with one line when it does not fit."""

from __future__ import annotations

import json
import sys

from pipeline.cli import Command, flag, parse, switch
from pipeline.plan.config import PlanRunConfig

CLI = Command("python -m pipeline.plan", __doc__.splitlines()[0], flags=(
    flag("--nodes", key="plan.nodes"), flag("--gpus-per-node", key="plan.gpus_per_node"),
    flag("--gpu-memory-gib", key="plan.gpu_memory_gib"), flag("--peak-tflops", key="plan.peak_tflops"),
    switch("--json", help="print one JSON object instead of the table")),
    sections=("plan", "model", "data", "train"), root=PlanRunConfig)


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse(CLI, argv)
    from pipeline.plan.report import Cluster, advice, make_plan, table

    p = cfg.plan
    cluster = Cluster(p.nodes, p.gpus_per_node, p.gpu_memory_gib, p.peak_tflops)
    try:
        plan = make_plan(cfg, cluster)
    except (FileNotFoundError, ValueError) as e:
        print(f"{CLI.prog}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan) if ns.json else table(plan))
    if not plan["fits"]:
        print(advice(plan, cfg, cluster), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
