"""Where this process sits, read from the launcher's environment without importing torch: torchrun / deepspeed
(RANK, LOCAL_RANK, WORLD_SIZE), Slurm srun (SLURM_PROCID, ...), Open MPI, else one process. Entry points read it
before anything heavy (e.g. to check that the global batch splits over the ranks), logging for its rank filter,
`pipeline.train.dist.init` for the rendezvous."""

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


_LAUNCHERS = (  # (launcher, its variables for the global rank, the rank on the node, the world size)
    ("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
    ("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
)


def launched(environ=None) -> tuple[str, int, int, int]:
    """(launcher, rank, local rank, world size) from the launcher's variables; ("single", 0, 0, 1) without one."""
    e = os.environ if environ is None else environ
    for launcher, rank, local, world in _LAUNCHERS:
        if rank in e and world in e:
            return launcher, int(e[rank]), int(e.get(local, 0)), int(e[world])
    return "single", 0, 0, 1


def env_from(environ=None) -> DistEnv:
    """Ranks from the launcher's variables (`launched`) plus the rendezvous address: torchrun / deepspeed and Open
    MPI give MASTER_ADDR/PORT, Slurm the first node of the job and a port derived from the job id."""
    e = os.environ if environ is None else environ
    launcher, rank, local, world = launched(e)
    port = int(e.get("MASTER_PORT", 0))
    if launcher == "slurm":
        # A port every task of the job agrees on without talking: derived from the job id.
        port = port or 20000 + int(e.get("SLURM_JOB_ID", "0")) % 20000
        return DistEnv(rank, local, world, e.get("MASTER_ADDR") or _slurm_master(e), port, launcher)
    if launcher != "single":
        return DistEnv(rank, local, world, e.get("MASTER_ADDR", "127.0.0.1"), port or 29500, launcher)
    return DistEnv(master_port=port or free_port())
