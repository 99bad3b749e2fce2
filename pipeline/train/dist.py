"""Everything distributed in one place: environment -> ranks (torchrun, deepspeed launcher, Slurm), the one process
group, `is_rank0`, and the one autograd-aware cross-rank gather. Nothing else calls `init_process_group`."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    return DistEnv(master_port=port or _free_port())


def init(env: DistEnv | None = None, timeout_s: float = 1800) -> DistEnv:
    """Create the process group (gloo on CPU, nccl on CUDA) once, and export the variables DeepSpeed reads."""
    env = env or env_from()
    for key, value in (("RANK", env.rank), ("LOCAL_RANK", env.local_rank), ("WORLD_SIZE", env.world_size),
                       ("MASTER_ADDR", env.master_addr), ("MASTER_PORT", env.master_port)):
        os.environ[key] = str(value)
    if dist.is_initialized():
        return env
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    log.info("process group: %d ranks via %s, rendezvous %s:%d", env.world_size, env.launcher,
             env.master_addr, env.master_port)
    return env


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank0() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def device() -> torch.device:
    """This rank's compute device: its CUDA device, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def any_ranks(*flags: bool | torch.Tensor) -> list[bool]:
    """For each flag, whether it is true on at least one rank: one small all-reduce for all of them, read back to
    the host (a sync: call it once per step)."""
    t = torch.stack([torch.as_tensor(f).to(device=device(), dtype=torch.int32).reshape(()) for f in flags])
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of a detached tensor over ranks (for logging: stack the values and reduce them once)."""
    x = x.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def all_gather_fixed(x: torch.Tensor) -> torch.Tensor:
    """[W, *x.shape]: every rank's `x` (the same shape everywhere), rank order, without gradients."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x.unsqueeze(0)
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.stack(out)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    torch.distributed.nn's all_gather backward on gloo receives into `empty_like(grad)`, which keeps a permuted
    gradient's strides, and the scatter then fills it as if contiguous: gradients that reach the gather from
    einsum, amax or a split come back scrambled. Feeding it contiguous gradients avoids that (tested in test_dist).
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def gather_padded(x: torch.Tensor, n_max: int, grad: bool = True) -> torch.Tensor:
    """Every rank's `x` [B, N_r, ...] padded with zeros to [B, n_max, ...] and concatenated in rank order:
    [W*B, n_max, ...]. Every rank passes the same B and n_max (the largest N_r, known from an exchange of sizes).

    With `grad` the gather is autograd-aware: the gradients that every rank's loss sends to this rank's slice are
    summed into this rank's `x.grad` (torch.distributed.nn's all_gather). `grad=False` leaves only the local slice
    differentiable (other ranks' slices are constants): the usual bug, kept for the negative-control tests.
    """
    padded = F.pad(x, [0, 0] * (x.dim() - 2) + [0, n_max - x.shape[1]])
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return padded
    if grad:
        parts = [_ContiguousGrad.apply(p) for p in dist_nn.all_gather(padded)]
    else:
        parts = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, padded.detach().contiguous())
        parts[dist.get_rank()] = padded
    return torch.cat(parts, dim=0)
