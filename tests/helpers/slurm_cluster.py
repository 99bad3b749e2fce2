"""A real Slurm cluster of N emulated nodes on this machine (munged, slurmctld, one slurmd per node), by PID.

Everything lives under one state directory: its own munge key and socket, slurm.conf, spool and logs, so
nothing touches /etc or a system munged. Clients (`sbatch`, `squeue`, ...) find it through `SLURM_CONF`,
which `LocalSlurm.env()` sets. Every wait has a timeout. `python -m tests.helpers.slurm_cluster DIR` starts one
by hand (Ctrl-C stops it), for trying `slurm/*.sh` before a real cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel", "srun")

CONF = """\
ClusterName=emu
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool/%n
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd-%n.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=300
SlurmctldTimeout=300
MessageTimeout=30
NodeName=n[1-{n}] NodeHostname={host} NodeAddr=127.0.0.1 Port=[{first}-{last}] CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=n[1-{n}] Default=YES MaxTime=INFINITE State=UP
"""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_installed(timeout: float = 600) -> str | None:
    """Install Debian's Slurm and munge when missing; returns a reason string when that is not possible."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} timed out after {timeout:.0f} s"
        if r.returncode != 0:
            return f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}"
    left = missing_binaries()
    return f"still missing after apt-get: {left}" if left else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_base_port(base: int, n: int) -> int:
    """`base` (slurmctld) and base+1..base+n (slurmd) all free; else the next block of 100."""
    for b in range(base, base + 2000, 100):
        if all(_port_free(p) for p in range(b, b + n + 1)):
            return b
    raise RuntimeError(f"no free block of {n + 1} ports from {base}")


def _stepds_alive(job_id: int) -> bool:
    """Whether any `slurmstepd: [JOB.step]` process of this job is still running on this machine."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(f"slurmstepd: [{job_id}.".encode()):
                return True
        except OSError:
            continue
    return False


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class LocalSlurm:
    """N emulated nodes n1..nN on 127.0.0.1; slurmd of node K listens on base_port+K."""

    state: Path
    nodes: int = 8
    base_port: int = 17000
    cpus: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.state / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment plus SLURM_CONF, for every client command and every job."""
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def _write_files(self) -> None:
        for sub in ("ctld", "log", "munge", *[f"spool/n{k}" for k in range(1, self.nodes + 1)]):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        munge_dir = self.state / "munge"
        os.chmod(self.state, 0o755)
        os.chmod(munge_dir, 0o755)  # munged refuses a socket directory others may write; clients must reach it
        key = munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.base_port = _pick_base_port(self.base_port, self.nodes)
        self.conf.write_text(CONF.format(
            host=socket.gethostname().split(".")[0], ctld_port=self.base_port, state=self.state,
            munge_socket=munge_dir / "munge.socket", n=self.nodes, first=self.base_port + 1,
            last=self.base_port + self.nodes, cpus=self.cpus))

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.state / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=self.env())
        log.close()

    def start(self, timeout: float = 90) -> LocalSlurm:
        """Start munged, slurmctld and every slurmd; return once `sinfo` shows all nodes idle."""
        self._write_files()
        m = self.state / "munge"
        self._spawn("munged", [_sbin("munged"), "--foreground", "--force", f"--socket={m / 'munge.socket'}",
                               f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={self.state / 'log' / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
        self._wait(lambda: (m / "munge.socket").exists(), 20, "munged socket")
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run("sinfo", "-h", check=False).returncode == 0, 40, "slurmctld answering")
        for k in range(1, self.nodes + 1):
            self._spawn(f"n{k}", [_sbin("slurmd"), "-D", "-N", f"n{k}", "-f", str(self.conf)])
        self._wait(lambda: self.idle_nodes() == self.nodes, timeout, f"{self.nodes} idle nodes")
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.time() > deadline:
                why = f"{dead} exited" if dead else f"not ready after {timeout:.0f} s"
                raise RuntimeError(f"local Slurm: waiting for {what}: {why}\n{self.logs_tail()}")
            time.sleep(0.3)

    def logs_tail(self, chars: int = 3000) -> str:
        out = []
        for f in sorted((self.state / "log").glob("*")):
            text = f.read_text(errors="replace")[-chars:]
            if text.strip():
                out.append(f"== {f.name}\n{text}")
        return "\n".join(out)

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        r = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def idle_nodes(self) -> int:
        r = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return sum(1 for line in r.stdout.splitlines() if line.split()[-1:] == ["idle"])

    def sbatch(self, script: str | Path, *options: str, env: dict[str, str] | None = None,
               cwd: str | Path | None = None) -> int:
        """Submit `script` with sbatch `options` (the environment is exported to the job); returns the job id."""
        r = subprocess.run(["sbatch", "--parsable", *options, str(script)], env={**self.env(), **(env or {})},
                           capture_output=True, text=True, timeout=30, cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return int(r.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, NodeList, ...); {} once forgotten."""
        r = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        return dict(re.findall(r"(\w+)=(\S*)", r.stdout)) if r.returncode == 0 else {}

    def wait_job(self, job_id: int, states: set[str], timeout: float, restarts: int = 0) -> dict[str, str]:
        """Wait until the job is in one of `states` with Restarts >= `restarts`; scancel it on timeout."""
        deadline = time.time() + timeout
        info: dict[str, str] = {}
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states and int(info.get("Restarts", 0)) >= restarts:
                return info
            time.sleep(0.5)
        self.run("scancel", str(job_id), check=False)
        raise TimeoutError(f"job {job_id} not in {states} (restarts>={restarts}) after {timeout:.0f} s: {info}\n"
                           f"{self.logs_tail(1500)}")

    def job_events(self, job_id: int) -> str:
        """slurmctld's log lines about one job (for assertion messages)."""
        log = self.state / "log" / "slurmctld.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return "\n".join(line for line in lines if f"JobId={job_id} " in line + " " or f"job {job_id}" in line)

    def release_requeued(self, job_id: int, timeout: float = 120) -> None:
        """Slurm holds a requeued job ~2 min (BeginTime); once it pends again, make it eligible now. (Updating
        it earlier, while the first run is still COMPLETING, can fail the job.)"""
        info = self.wait_job(job_id, {"PENDING", "RUNNING", "COMPLETED", "FAILED"}, timeout, restarts=1)
        if info["JobState"] != "PENDING":
            return
        # Starting it again while the first run's slurmstepd still cleans up fails the new batch launch at once:
        # wait (bounded) until every node is idle and no slurmstepd of this job is left.
        deadline = time.time() + 90
        while time.time() < deadline and (self.idle_nodes() < self.nodes or _stepds_alive(job_id)):
            time.sleep(0.5)
        time.sleep(2)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)

    def drain_jobs(self, timeout: float = 40) -> None:
        """Cancel every job of this user and wait (bounded) until the queue is empty."""
        self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
        deadline = time.time() + timeout
        while time.time() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
            time.sleep(0.5)

    def stop(self, grace: float = 5) -> None:
        """Cancel every job, then stop each daemon by its PID (slurmd ignores SIGTERM in the foreground)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.drain_jobs()
        order = [n for n in self.procs if n.startswith("n")] + ["slurmctld", "munged"]
        for name in order:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self.procs.clear()


def main(argv: list[str]) -> None:
    state = Path(argv[0] if argv else "slurm-emu").resolve()
    cluster = LocalSlurm(state).start()
    print(f"export SLURM_CONF={cluster.conf}   # {cluster.nodes} nodes up; Ctrl-C stops them", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
