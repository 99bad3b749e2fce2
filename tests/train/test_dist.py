"""pipeline.train.dist: launcher environments -> ranks, and the autograd-aware gather on 2 real gloo processes."""

import json

import pytest
import torch

from pipeline.train import dist
from tests.train.launch import run, torchrun_cmd


def test_env_from_each_launcher():
    tr = dist.env_from({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.1",
                        "MASTER_PORT": "1234"})
    assert (tr.rank, tr.local_rank, tr.world_size, tr.master_addr, tr.master_port) == (3, 1, 8, "10.0.0.1", 1234)
    sl = dist.env_from({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "4242",
                        "MASTER_ADDR": "n1"})
    assert (sl.rank, sl.local_rank, sl.world_size, sl.master_addr, sl.launcher) == (5, 1, 16, "n1", "slurm")
    assert sl.master_port == dist.env_from({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "4242",
                                            "MASTER_ADDR": "n1"}).master_port  # every task agrees on the port
    one = dist.env_from({})
    assert (one.rank, one.world_size, one.launcher) == (0, 1, "single")


def _expected(grad: bool):
    """Independent reference: rank r's leaf [2, 2+r, 3]; every rank's loss is sum(gathered * coef_r)."""
    xs = [torch.arange(2 * (2 + r) * 3, dtype=torch.float32).reshape(2, 2 + r, 3).add(10 * r) for r in range(2)]
    gathered = torch.zeros(4, 3, 3)
    gathered[:2, :2], gathered[2:] = xs[0], xs[1]
    base = torch.arange(gathered.numel(), dtype=torch.float32).reshape(3, 3, 4).permute(2, 0, 1)
    grads = []
    for r in range(2):
        rows = slice(2 * r, 2 * r + 2)
        coef = base * 3 if grad else base * (r + 1)  # with flow: sum of both ranks' coefficients (1 + 2)
        grads.append(coef[rows, : 2 + r])
    return gathered, grads


@pytest.mark.parametrize("grad", [True, False])
def test_gather_sends_gradients_to_the_owning_rank(tmp_path, grad):
    out = tmp_path / "res"
    proc = run(torchrun_cmd(2, "tests/train/_gather_worker.py", str(out), "1" if grad else "0"), timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    gathered, grads = _expected(grad)
    for r in range(2):
        res = json.load(open(f"{out}.{r}"))
        assert torch.equal(torch.tensor(res["gathered"]), gathered)
        assert torch.equal(torch.tensor(res["grad"]), grads[r])
        assert res["any"] is True
