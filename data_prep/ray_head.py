"""A local Ray head for the demo and the tests: `ray start --head --block` on free 127.0.0.1 ports, stopped by its PID.

    with RayHead(num_cpus=2) as address:          # http://127.0.0.1:PORT (the job API)
        submit_render_job(address, "corpus", "shards", ["render.shard_size=32"])

Never `ray stop` (it would stop every Ray on the machine): the head is stopped by SIGTERM to the PID
this module started, and any process left in the group it created is killed after a grace period.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pipeline.procs import free_port, stop_process_group

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
_PORTS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port", "metrics-export-port",
          "runtime-env-agent-port")


def _env() -> dict[str, str]:
    """The head's environment: this Python's bin first (job drivers run `python` from the head's PATH)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only head; see README for token auth on a cluster
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop("RAY_ADDRESS", None)
    return env


class RayHead:
    """A Ray head bound to 127.0.0.1 on free ports, with its own short temp dir; a context manager."""

    def __init__(self, num_cpus: int = 2):
        self.num_cpus = num_cpus
        self.ports = {k: free_port() for k in _PORTS}
        self.address = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        self.proc: subprocess.Popen | None = None
        self.temp_dir = ""

    @property
    def gcs_address(self) -> str:
        """What `ray.init(address=...)` takes to join this head as a driver."""
        return f"127.0.0.1:{self.ports['port']}"

    def start(self, timeout: float = 90) -> str:
        """Start the head and wait until its job API answers; returns the job API address."""
        self.temp_dir = tempfile.mkdtemp(prefix="rayh")  # short: Ray's unix sockets live under it
        cmd = ["ray", "start", "--head", "--num-cpus", str(self.num_cpus), "--disable-usage-stats",
               "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--temp-dir", self.temp_dir, "--block"]
        cmd += [f"--{k}={v}" for k, v in self.ports.items()]
        with open(Path(self.temp_dir) / "head.log", "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=_env())
        deadline = time.time() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.time() > deadline:
                tail = (Path(self.temp_dir) / "head.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"Ray head did not come up at {self.address}:\n{tail}")
            time.sleep(0.5)
        log.info("Ray head up: %s (pid %d)", self.address, self.proc.pid)
        return self.address

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/api/jobs/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the head's PID, then make sure nothing of its process group is left."""
        if self.proc is not None:
            stop_process_group(self.proc)
            log.info("Ray head stopped (pid %d)", self.proc.pid)
            self.proc = None
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def submit_render_job(address: str, input_path: str, output: str, overrides: list[str] | tuple[str, ...] = (),
                      working_dir: str | Path = ROOT, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`ray job submit --address A --working-dir W -- python data_prep/render.py --input I --output O ...`.

    Paths are made absolute: the job runs in Ray's copy of the working dir, which leaves out ignored
    files (such as demo_out/). Raises CalledProcessError when the job fails.
    """
    cmd = ["ray", "job", "submit", "--address", address, "--working-dir", str(working_dir), "--",
           "python", "data_prep/render.py", "--input", str(Path(input_path).resolve()),
           "--output", str(Path(output).resolve()), *overrides]
    res = subprocess.run(cmd, cwd=working_dir, capture_output=True, text=True, timeout=timeout, env=_env())
    if res.returncode != 0 or "succeeded" not in res.stdout:
        raise subprocess.CalledProcessError(res.returncode, cmd, res.stdout, res.stderr)
    return res
