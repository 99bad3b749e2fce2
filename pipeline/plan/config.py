"""The plan's section of the config tree: the cluster a run is sized for (python -m pipeline.plan)."""

from __future__ import annotations

from pydantic import Field

from pipeline.cli import RunConfig
from pipeline.configlib import PosFloat, PosInt, Section

H100_BF16_TFLOPS = 989.0  # H100 SXM dense bf16 spec; ENVIRONMENT.md measured ~790 for matmuls


class PlanConfig(Section):
    """The cluster the plan sizes the run for."""

    nodes: PosInt = 8
    """Nodes in the job."""
    gpus_per_node: PosInt = 8
    """GPUs per node."""
    gpu_memory_gib: PosFloat = 80.0
    """Memory of one GPU (GiB)."""
    peak_tflops: PosFloat = H100_BF16_TFLOPS
    """Dense bf16 peak of one GPU for MFU (TFLOP/s; default: the H100 SXM spec)."""


class PlanRunConfig(RunConfig):
    """The pipeline's tree plus the cluster the plan sizes it for."""

    plan: PlanConfig = Field(default_factory=PlanConfig)
