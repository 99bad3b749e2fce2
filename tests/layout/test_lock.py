"""The output-directory lock: a second claim (another process, or this one again) is refused in one line naming the
holder's job, host, PID and start time; the lock goes when the holder releases it or dies (kill -9 leaves no stale
lock, although its record stays in the file); `serialised` makes processes take turns."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.layout.lock import LOCK_NAME, DirectoryInUse, claim, serialised

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)
HOLD = "import sys, time; from pipeline.layout.lock import claim; claim(sys.argv[1], 'render job'); print('held', flush=True); time.sleep(600)"


def holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_second_claim_names_the_holder_and_kill_9_frees_it(tmp_path):
    d = tmp_path / "out"
    proc = holder(d)
    try:
        with pytest.raises(DirectoryInUse) as err:
            claim(d, "training")
        record = json.loads((d / LOCK_NAME).read_text())
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{d} is in use by render job on host {socket.gethostname()}, "
                                                  f"PID {proc.pid}, started {record['started']} (lock {d / LOCK_NAME}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads((d / LOCK_NAME).read_text())["pid"] == proc.pid  # the dead holder's record is still there...
    with claim(d, "training") as lock:  # ...but the kernel dropped its lock
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(DirectoryInUse, match=f"training on host .*, PID {os.getpid()}, started"):
            claim(d, "training")  # this process again, through another descriptor: refused too
    claim(d, "training").release()  # released: free again


def test_serialised_sections_do_not_overlap(tmp_path):
    """Four processes each append 'in', wait, append 'out' under the same lock: the log never interleaves."""
    log, lock = tmp_path / "log", tmp_path / "x.lock"
    code = ("import sys, time; from pipeline.layout.lock import serialised\n"
            "with serialised(sys.argv[1]):\n"
            "    open(sys.argv[2], 'a').write('in\\n'); time.sleep(0.3); open(sys.argv[2], 'a').write('out\\n')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(lock), str(log)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert log.read_text().split() == ["in", "out"] * 4
    with serialised(lock):  # free again afterwards
        pass
