"""Helpers for tests that start real multi-process jobs (torchrun) and stop them by process group id, and read what
the runs wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def run(cmd: list[str], timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` from the repo root in its own process group; on timeout kill that group and fail."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out: {' '.join(cmd)}\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def final_weights(run_dir: Path) -> dict:
    """Every tensor of a run's final/ safetensors files, keyed `file/tensor` (for bitwise comparisons)."""
    from safetensors.torch import load_file

    files = sorted((run_dir / "final").glob("*.safetensors"))
    return {f"{p.name}/{k}": v for p in files for k, v in load_file(p).items()}
