"""Index storage dtypes: int8 per-vector quantisation against its definition, and bytes that count the scales."""

import pytest
import torch

from pipeline.evaluate.cost import bytes_per_page, bytes_per_page_from_grids
from pipeline.evaluate.quantize import quantize_int8, stored


def test_int8_round_trip_is_within_half_a_step_of_each_coordinate():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 9, 32, generator=g), dim=-1)
    v[0, 0] = 0.0  # an empty (padding) vector stays zero
    q, scale = quantize_int8(v)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and scale.shape == (6, 9, 1)
    assert q.abs().max() <= 127 and torch.all(stored(v, "int8")[0, 0] == 0)
    back = stored(v, "int8")
    step = scale.float()
    assert torch.all((back - v).abs() <= step / 2 + 1e-6)  # round to the nearest step
    assert not torch.equal(back, v) and (back - v).abs().max() < 0.01  # really quantised, and close
    # the largest coordinate of each vector maps to +-127 (up to the float16 rounding of the scale)
    assert (q[1:].abs().amax(-1) >= 126).all()


def test_bytes_count_the_int8_scales():
    counts = torch.tensor([4, 2])
    assert bytes_per_page(counts, 32, "float16") == 3 * 32 * 2
    assert bytes_per_page(counts, 32, "int8") == 3 * (32 + 2)
    grids = torch.tensor([[4, 4], [2, 4]])
    assert bytes_per_page_from_grids(grids, 16, 2, "int8") == pytest.approx((4 + 2) / 2 * (16 + 2))


def test_int8_index_scores_are_maxsim_over_hand_quantised_pages():
    """run_for_budget at int8 ranks by MaxSim over pages quantised by hand (lists, numpy's float16 for the scale)."""
    import numpy as np

    from pipeline.evaluate.grid import Encoded, run_for_budget
    from pipeline.model.budgets import Budget
    from pipeline.model.vectors import MultiVector
    from tests.model.reference import ref_maxsim

    g = torch.Generator().manual_seed(1)
    pv = torch.nn.functional.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)
    qv = torch.nn.functional.normalize(torch.randn(3, 2, 8, generator=g), dim=-1)
    pages = MultiVector(pv, torch.ones(5, 4, dtype=torch.bool), torch.tensor([[2, 2]] * 5))
    queries = MultiVector(qv, torch.ones(3, 2, dtype=torch.bool), None)
    keys, qids = [f"p{i}" for i in range(5)], ["q0", "q1", "q2"]
    enc = Encoded(keys, {1: pages}, {1: queries}, qids, {q: {"p0": 1} for q in qids}, [], [])
    run, counts = run_for_budget(enc, Budget(1, 8, 1), depth=10, index_dtype="int8")

    def by_hand(vec):
        scale = float(np.float16(max(abs(x) for x in vec) / 127))
        return [max(-127, min(127, round(x / scale))) * scale for x in vec]

    want = ref_maxsim([q.tolist() for q in qv], [[by_hand(v) for v in p.tolist()] for p in pv])
    for qi, q in enumerate(qids):
        assert list(run[q]) == sorted(keys, key=lambda k: -want[qi][keys.index(k)])
        for k, s in run[q].items():
            assert s == pytest.approx(want[qi][keys.index(k)], abs=1e-5)
    float_run, _ = run_for_budget(enc, Budget(1, 8, 1), depth=10, index_dtype="float32")
    assert any(run[q][k] != float_run[q][k] for q in qids for k in keys)  # the int8 path really quantised
    assert counts.tolist() == [4] * 5
