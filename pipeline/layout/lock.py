"""One job per output directory: an exclusive `flock` on a lock file inside it, held for the job's life and released
by the kernel when the holding process ends (kill -9 included), so a crash never leaves a stale lock (children
forked without exec, such as DataLoader workers, share it until they exit too). A second job is refused in one
line naming the holder (job, host, PID, start time), which the holder writes into the lock file.

The lock is advisory: it keeps this project's jobs (training, rendering) apart, not other programs. It is as wide
as the filesystem makes `flock`: one machine on a local disk; on NFS (Linux clients emulate flock with NFS
byte-range locks) every client of a mount with locking (not `nolock`); on Lustre every client only with the `flock`
mount option (`localflock`: one node; the default `noflock` refuses flock, and then the job warns and runs
unlocked). `serialised` is the same flock, blocking, for short critical sections (e.g. a store's set-up).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)
LOCK_NAME = ".job.lock"


class DirectoryInUse(RuntimeError):
    """Another live job holds the directory's lock (the message is one line naming it)."""


class DirLock:
    """A held directory lock (`fd` None: the filesystem has no flock, nothing is held); `release()` ends it."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    """Who holds the lock, from the record its holder wrote."""
    try:
        rec = json.loads(os.pread(fd, 4096, 0).decode())
        return f"{rec['job']} on host {rec['host']}, PID {rec['pid']}, started {rec['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "another job (which has not written its name yet)"


def claim(directory: str | Path, job: str) -> DirLock:
    """Take `directory`'s lock for this process (the directory is created); DirectoryInUse when a live job holds
    it. `job` names this job for whoever is refused (e.g. "training")."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DirectoryInUse(f"{directory} is in use by {holder} (lock {path}; it is released when that process "
                             "ends): wait for it, or use another directory") from None
    except OSError as e:  # e.g. Lustre mounted noflock: warn, do not stop the job
        os.close(fd)
        log.warning("cannot lock %s (%s): this filesystem has no flock, so two jobs into one directory are not "
                    "prevented", path, e.strerror)
        return DirLock(path, None)
    record = {"job": job, "host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return DirLock(path, fd)


@contextlib.contextmanager
def serialised(lock_file: str | Path) -> Iterator[None]:
    """Run the block while holding an exclusive flock on `lock_file` (created), waiting for any other holder."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # no flock on this filesystem
            log.warning("cannot lock %s (%s): going on unserialised", lock_file, e.strerror)
        yield
    finally:
        os.close(fd)
