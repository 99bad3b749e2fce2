"""pipeline.train.dist: launcher environments -> ranks, and the autograd-aware gather on 2 real gloo processes."""

import json

import pytest
import torch

from pipeline.train import dist
from tests.helpers.procs import run, torchrun_cmd

pytestmark = pytest.mark.heavy  # launches processes (make test-fast leaves it out)


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
    """Independent reference: what the two ranks' exchanged pages, masks, grids and gradients must be."""
    from tests.train._gather_worker import local_pages

    ranks = [local_pages(r) for r in range(2)]
    vectors = {}
    for e in (1, 2):
        v = torch.zeros(4, 3, 3)
        v[:2, :2], v[2:] = ranks[0][e].vectors.detach(), ranks[1][e].vectors.detach()
        vectors[e] = v
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True], [True, True, False]])
    grids = torch.tensor([[1, 2], [1, 1], [1, 3], [1, 2]])
    base = torch.arange(36, dtype=torch.float32).reshape(3, 3, 4).permute(2, 0, 1)
    grads = []
    for r in range(2):
        rows = slice(2 * r, 2 * r + 2)
        coef = base * 3 if grad else base * (r + 1)  # with flow: the sum of both ranks' coefficients (1 + 2)
        grads.append({e: (coef * e)[rows, : 2 + r] for e in (1, 2)})
    return vectors, mask, grids, grads


@pytest.mark.parametrize("grad", [True, False])
def test_page_exchange_sends_gradients_to_the_owning_rank(tmp_path, grad):
    out = tmp_path / "res"
    proc = run(torchrun_cmd(2, "tests/train/_gather_worker.py", str(out), "1" if grad else "0"), timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    vectors, mask, grids, grads = _expected(grad)
    for r in range(2):
        res = json.load(open(f"{out}.{r}"))
        for e in (1, 2):
            assert torch.equal(torch.tensor(res["vectors"][str(e)]), vectors[e])
            assert torch.equal(torch.tensor(res["grad"][str(e)]), grads[r][e])
        assert torch.equal(torch.tensor(res["mask"]), mask)  # rebuilt from each page's count: padding masked
        assert torch.equal(torch.tensor(res["grids"]), grids)
        assert res["flags"] == [True, False, True]  # one all-reduce, each flag true if any rank's is
