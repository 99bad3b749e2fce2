"""The process group: rank 0's rendezvous store listens only on the address it was given (127.0.0.1 here, not every
interface), and a stopped rank fails the others after `train.dist_timeout_s` instead of hanging them."""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.procs import free_port

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import os, signal, sys, time, torch
import torch.distributed as d
from pipeline.train import dist
from pipeline.ranks import DistEnv
rank, world, port, timeout = (int(a) for a in sys.argv[1:5])
dist.init(DistEnv(rank=rank, world_size=world, master_port=port), timeout_s=timeout)
print("ready", flush=True)
if sys.argv[5] == "stop" and rank == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # a rank that stops answering, as under SIGSTOP or a hung node
if sys.argv[5] == "wait":
    sys.stdin.read()
t0 = time.time()
try:
    d.all_reduce(torch.ones(1))
    print("reduced", flush=True)
except Exception as e:
    print(f"failed after {time.time() - t0:.1f} s: {type(e).__name__}", flush=True)
"""


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(f":{port:04X}"):
                found.append(local)
    return found


def _line(proc: subprocess.Popen, timeout: float) -> str:
    """The next stdout line of `proc`, or '' when none comes within `timeout` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)


def test_rank0_store_binds_loopback_only():
    port = free_port()
    proc = _start("0", "1", str(port), "30", "wait")
    try:
        assert _line(proc, 60) == "ready"
        assert _listeners(port) == [f"0100007F:{port:04X}"]  # 127.0.0.1 only: not 0.0.0.0, not [::]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_stopped_rank_fails_the_others_after_the_timeout():
    port = free_port()
    r0, r1 = _start("0", "2", str(port), "4", "stop"), _start("1", "2", str(port), "4", "stop")
    try:
        assert _line(r0, 60) == "ready"
        t0 = time.time()
        line = _line(r0, 60)
        took = time.time() - t0
        assert line.startswith("failed after"), line  # the 4 s timeout, not the old fixed 1,800 s
        assert 3 < took < 60, took
    finally:
        for p in (r0, r1):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
