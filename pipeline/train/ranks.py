"""Where this process sits, read from the launcher's environment without importing torch: torchrun / deepspeed
(RANK, LOCAL_RANK, WORLD_SIZE), Slurm srun (SLURM_PROCID, ...), Open MPI, else one process. Entry points read it
before anything heavy (e.g. to check that the global batch splits over the ranks); `dist.init` uses it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from pipeline.procs import free_port


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, rank on its node, world size, rendezvous address and the launcher."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "single"


def _slurm_master(environ) -> str:
    """First host of the job's node list, as an address (scontrol resolves the Slurm NodeAddr)."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist or not shutil.which("scontrol"):
        return "127.0.0.1"
    host = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    out = subprocess.run(["scontrol", "show", "node", host], capture_output=True, text=True).stdout
    for token in out.split():
        if token.startswith("NodeAddr="):
            return token.split("=", 1)[1]
    return host


def env_from(environ=None) -> DistEnv:
    """Read ranks from the launcher's variables: torchrun / deepspeed (RANK, LOCAL_RANK, WORLD_SIZE), Slurm srun
    (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS), Open MPI (OMPI_COMM_WORLD_*), else one process."""
    e = os.environ if environ is None else environ
    port = int(e.get("MASTER_PORT", 0))
    if "RANK" in e and "WORLD_SIZE" in e:
        return DistEnv(int(e["RANK"]), int(e.get("LOCAL_RANK", 0)), int(e["WORLD_SIZE"]),
                       e.get("MASTER_ADDR", "127.0.0.1"), port or 29500, "torchrun")
    if "SLURM_PROCID" in e and "SLURM_NTASKS" in e:
        # A port every task of the job agrees on without talking: derived from the job id.
        port = port or 20000 + int(e.get("SLURM_JOB_ID", "0")) % 20000
        return DistEnv(int(e["SLURM_PROCID"]), int(e.get("SLURM_LOCALID", 0)), int(e["SLURM_NTASKS"]),
                       e.get("MASTER_ADDR") or _slurm_master(e), port, "slurm")
    if "OMPI_COMM_WORLD_RANK" in e:
        return DistEnv(int(e["OMPI_COMM_WORLD_RANK"]), int(e.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)),
                       int(e["OMPI_COMM_WORLD_SIZE"]), e.get("MASTER_ADDR", "127.0.0.1"), port or 29500, "mpi")
    return DistEnv(master_port=port or free_port())
