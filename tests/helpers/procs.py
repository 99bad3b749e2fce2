"""Running real commands from the tests: a whole job in its own process group (the launcher and everything under
it killed on timeout), and torchrun's command line."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def kill_job(proc: subprocess.Popen) -> None:
    """kill -9 of a launcher and every process under it, as a scheduler's kill of the job does: torchrun starts each
    rank in a session of its own, so a signal to the launcher's process group leaves the ranks running."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=60)


def run(cmd: list[str], timeout: float = 300, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `cmd` (from the checkout by default) in its own process group; on timeout kill the job and fail.
    stdout and stderr come back together in `.stdout`."""
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out: {' '.join(cmd)}\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)
