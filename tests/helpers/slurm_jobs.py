"""Helpers for the Slurm tests: submit the unmodified batch script to the local cluster, read its logs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.slurm_cluster import LocalSlurm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "slurm" / "train_8node.sh"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


def submit(cluster: LocalSlurm, tmp_path: Path, env: dict[str, str], *options: str) -> int:
    """`sbatch slurm/train_8node.sh` unmodified; only CPU-node options on the command line."""
    return cluster.sbatch(SCRIPT, "--gpus-per-node=0", f"--output={tmp_path}/%x-%j.out", *options, env=env,
                          cwd=ROOT)


def batch_log(tmp_path: Path, job_id: int) -> str:
    files = list(tmp_path.glob(f"*-{job_id}.out"))
    return files[0].read_text() if files else ""


def node_logs(tmp_path: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "logs").glob("*.log")))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
