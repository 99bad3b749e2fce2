"""benchmarks/gpu_step.py runs where there is no GPU: a scaled-down model, one JSON line per setting, said so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_step_benchmark_cpu_path():
    out = subprocess.run([sys.executable, "benchmarks/gpu_step.py", "--steps", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["grad_cache"] for r in rows] == [True, False]
    for r in rows:
        assert r["device"] == "cpu" and r["scaled_down"] and r["attn"] == "sdpa"
        assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and r["mfu"] is None and r["plan_memory_gib"] > 0
    assert rows[0]["chunk"] < rows[1]["chunk"]  # the cached step encodes in chunks, the plain one in one graph
