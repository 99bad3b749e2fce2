"""Processes the pipeline starts for the user or its tests: a free loopback port, and stopping a process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the OS picks it; another process may take it before it is bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process started with start_new_session=True: `sig` to it (SIGKILL: to its whole group), then
    wait until the group it created is empty (SIGKILL to that group as a last resort)."""
    try:
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)  # e.g. `ray start --block` drains and stops its children on SIGTERM
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    if not _group_gone(proc.pid, 15):
        os.killpg(proc.pid, signal.SIGKILL)
        _group_gone(proc.pid, 10)
    proc.wait(timeout=10)
