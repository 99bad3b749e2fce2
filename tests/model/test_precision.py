"""The precision axis: int8 and packed sign bits against hand quantisation in plain Python, exact bytes, and MaxSim
scored from the codes equal to MaxSim over the dequantised vectors (scores and top-k), chunked or not."""

import pytest
import torch

from pipeline.model.budgets import Budget, budget_grid, full_budget
from pipeline.model.maxsim import maxsim, maxsim_chunked, topk_stream
from pipeline.model.pooling import normalize
from pipeline.model.precision import PRECISIONS, Codes, StoredPages, bytes_per_vector, quantize
from pipeline.model.vectors import MultiVector
from tests.helpers.reference import half, hand_bin, hand_int8, hand_pack, ref_maxsim, real_rows


def rand(*shape, seed=0):
    return normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("dim", [32, 13, 8, 1])
def test_codes_match_hand_quantisation(dim):
    v = rand(5, 3, dim)
    v[0, 0] = 0.0  # an empty vector: int8 scale 0, every sign bit set
    rows = v.reshape(-1, dim).tolist()
    b = quantize(v, "bin")
    assert b.data.dtype == torch.uint8 and b.data.shape == (5, 3, (dim + 7) // 8)
    assert b.data.reshape(-1, b.data.shape[-1]).tolist() == [hand_pack(r) for r in rows]
    torch.testing.assert_close(b.dequantize().reshape(-1, dim), torch.tensor([hand_bin(r) for r in rows]))
    i8 = quantize(v, "int8")
    assert i8.data.dtype == torch.int8 and i8.scale.dtype == torch.float16 and i8.scale.shape == (5, 3, 1)
    torch.testing.assert_close(i8.dequantize().reshape(-1, dim), torch.tensor([hand_int8(r) for r in rows]),
                               atol=1e-7, rtol=1e-6)
    assert torch.all(i8.dequantize()[0, 0] == 0)
    f16 = quantize(v, "fp16")
    assert f16.dequantize().reshape(-1, dim).tolist() == [[half(x) for x in r] for r in rows]


def test_bytes_are_the_stored_tensors_bytes():
    v = rand(7, 40)
    for precision, per_vector in [("fp16", 80), ("int8", 42), ("bin", 5)]:
        c = quantize(v, precision)
        assert bytes_per_vector(40, precision) == per_vector and c.nbytes == 7 * per_vector
    assert bytes_per_vector(32, "bin") * 16 == bytes_per_vector(32, "fp16")  # 1/16 of the bytes
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        bytes_per_vector(32, "int4")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_maxsim_from_codes_equals_maxsim_over_dequantised_pages(precision):
    """Scores straight from the codes equal plain-Python MaxSim over hand-dequantised pages (padding masked, an
    empty page, several chunk sizes), and the top-k is the reference's."""
    dim, lengths = 13, [5, 1, 3, 0, 5, 2, 4, 5, 1]
    pv = rand(len(lengths), 5, dim, seed=1)
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    pv = torch.where(mask[..., None], pv, torch.full_like(pv, 7.0))  # padding: large garbage, must not count
    q = MultiVector(rand(4, 3, dim, seed=2), torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]).bool())
    stored = StoredPages.of(MultiVector(pv, mask), precision)
    hand = {"fp16": lambda r: [half(x) for x in r], "int8": hand_int8, "bin": hand_bin}[precision]
    pages = [[hand(v) for v in page] for page in real_rows(pv, mask)]
    want = torch.tensor(ref_maxsim(real_rows(q.vectors, q.mask), pages))
    torch.testing.assert_close(maxsim(q, stored), want.float(), atol=1e-5, rtol=1e-5)
    for page_chunk, query_chunk in [(2, 1), (4, 3), (512, 256)]:
        got = maxsim_chunked(q, stored, page_chunk=page_chunk, query_chunk=query_chunk)
        torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)
    scores, idx = topk_stream(q, [stored.slice(0, 4), stored.slice(4, 9)], k=4)
    assert idx.tolist() == want.topk(4, dim=1).indices.tolist()
    # Negative control: the float pages themselves score differently (the codes really are quantised).
    assert not torch.allclose(maxsim(q, MultiVector(pv, mask)), maxsim(q, stored), atol=1e-6)


def test_codes_round_trip_their_tensors_and_refuse_mismatches():
    c = quantize(rand(6, 20), "int8")
    back = Codes.from_tensors(c.tensors(), "int8", 20)
    assert torch.equal(back.data, c.data) and torch.equal(back.scale, c.scale)
    with pytest.raises(ValueError, match=r"stored codes torch.int8 \[..., 20\] are not bin at dim 20"):
        Codes.from_tensors(c.tensors(), "bin", 20)
    with pytest.raises(ValueError, match="are not int8"):
        Codes.from_tensors({"codes": c.data}, "int8", 20)  # the scales are missing


def test_budget_names_and_grid_carry_precision():
    grid = budget_grid([2, 4], [64, 32], [1, 2], PRECISIONS)
    assert len(grid) == 24 and grid[:3] == [Budget(4, 64, 1), Budget(4, 64, 1, "int8"), Budget(4, 64, 1, "bin")]
    assert full_budget(grid) == Budget(4, 64, 1) and all(Budget.parse(str(b)) == b for b in grid)
    assert str(Budget(2, 32, 2, "bin")) == "L2-d32-p2-bin" and str(Budget(2, 32, 2)) == "L2-d32-p2"
    assert Budget.parse("L2-d32-p2-fp16") == Budget(2, 32, 2)
    assert Budget(2, 32, 2, "int8").fp16 == Budget(2, 32, 2)
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        Budget.parse("L2-d32-p2-int4")
    for bad in ["L2-d32", "L2-d32-p2-bin-x", "Lx-d32-p2"]:
        with pytest.raises(ValueError, match="not a budget"):
            Budget.parse(bad)
