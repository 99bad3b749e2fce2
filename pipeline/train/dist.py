"""Everything distributed in one place: environment -> ranks (torchrun, deepspeed launcher, Slurm), the one process
group, `is_rank0`, and the one autograd-aware cross-rank gather. Nothing else calls `init_process_group`."""

from __future__ import annotations

import datetime
import logging
import os
import socket

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F

from pipeline.ranks import DistEnv, env_from  # noqa: F401  (dist.env_from: the launcher's ranks)

log = logging.getLogger(__name__)


def init(env: DistEnv | None = None, timeout_s: float = 1800) -> DistEnv:
    """Create the process group (gloo on CPU, nccl on CUDA) once, and export the variables DeepSpeed reads.

    `timeout_s` bounds every wait on the other ranks (rendezvous and collectives): a stopped or lost rank fails the
    others after that long instead of hanging them. Rank 0's rendezvous store listens on `env.master_addr` only
    (127.0.0.1 on one machine), not on every interface."""
    env = env or env_from()
    for key, value in (("RANK", env.rank), ("LOCAL_RANK", env.local_rank), ("WORLD_SIZE", env.world_size),
                       ("MASTER_ADDR", env.master_addr), ("MASTER_PORT", env.master_port)):
        os.environ[key] = str(value)
    if dist.is_initialized():
        return env
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("nccl" if cuda else "gloo", rank=env.rank, world_size=env.world_size, timeout=timeout,
                            store=_store(env, timeout))
    log.info("process group: %d ranks via %s, rendezvous %s:%d", env.world_size, env.launcher,
             env.master_addr, env.master_port)
    return env


def _store(env: DistEnv, timeout: datetime.timedelta) -> dist.TCPStore:
    """The rendezvous store: rank 0 serves it on a socket bound to master_addr:master_port, the others connect.

    Under torchrun (TORCHELASTIC_USE_AGENT_STORE) the agent serves it and every rank is a client."""
    if env.rank != 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=False, timeout=timeout)
    family = socket.AF_INET6 if ":" in env.master_addr else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((env.master_addr, env.master_port))
    listener.listen(1024)
    store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=True, timeout=timeout,
                          master_listen_fd=listener.fileno(), wait_for_workers=False)
    _listeners.append(listener)  # the store serves on this socket: keep it open for the process's life
    return store


_listeners: list[socket.socket] = []


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


def gather_objects(obj) -> list:
    """Every rank's picklable `obj` (small: file names, hashes, a line of text), in rank order, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


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
