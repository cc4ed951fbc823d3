"""``all_finite``, the fused finiteness check of ``nonfinite_flag(..., squared=False)``: it finds every NaN and
inf in every floating dtype, leaves finite gradients bitwise unchanged, and never writes the tensors it cannot
rewrite in place (overlapping views, gradients with a graph)."""

from __future__ import annotations

import pytest
import torch

from precond.optim._common import all_finite, float32_norms, nonfinite_flag

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _grads(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(dtype) for s in [(7, 5), (3,), (2, 3, 4, 5)]] + [
        torch.randn(6, 4, generator=g).to(dtype).t()  # non-contiguous (a transpose): read through its norm
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 1, 2, 3])
def test_every_non_finite_entry_is_found(dtype: torch.dtype, bad: float, where: int) -> None:
    grads = _grads(dtype)
    assert bool(all_finite(grads))
    index = (-1,) * grads[where].ndim if where != 3 else (1, 2)  # the last entry (a vector tail); a strided one
    grads[where][index] = bad
    assert not bool(all_finite(grads))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_finite_entries_are_bitwise_unchanged(dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    special = torch.tensor([-0.0, 0.0, info.tiny / 4, -info.tiny, info.max, -info.max, 1.5], dtype=dtype)
    grads = [*_grads(dtype), special]
    before = [g.clone() for g in grads]
    assert bool(all_finite(grads))
    int_dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[info.bits // 8]
    for g, b in zip(grads, before, strict=True):
        assert torch.equal(g.contiguous().view(int_dtype), b.contiguous().view(int_dtype))


def test_overlapping_and_graph_carrying_tensors_are_read_not_written() -> None:
    base = torch.ones(4)
    expanded = base.expand(3, 4)  # one memory location per column: cannot be rewritten in place
    leaf = torch.ones(5, requires_grad=True)
    with_graph = leaf * 2.0
    version = with_graph._version
    assert bool(all_finite([expanded, with_graph, torch.zeros(2)]))
    assert with_graph._version == version
    base[1] = float("nan")
    assert not bool(all_finite([torch.zeros(2), expanded]))
    with torch.no_grad():
        leaf[0] = float("inf")
    assert not bool(all_finite([(leaf * 2.0), torch.zeros(2)]))


def test_squared_check_also_counts_overflowing_norms_and_the_plain_one_does_not() -> None:
    huge = [torch.full((4,), 1e30)]  # finite, but its squared norm overflows float32
    assert not bool(nonfinite_flag(huge, "skip", squared=True))
    assert bool(nonfinite_flag(huge, "skip", squared=False))
    with pytest.raises(ValueError, match="non-finite"):
        nonfinite_flag([torch.tensor([float("nan")])], "raise", squared=False)
    assert nonfinite_flag([torch.tensor([float("nan")])], "off", squared=False) is None


@pytest.mark.parametrize("squared", [True, False])
def test_a_large_float16_gradient_is_finite_when_its_norm_passes_65504(squared: bool) -> None:
    """A float16 norm would overflow at 65504 (300 per entry over 10^5 entries): the norms are float32."""
    big = torch.full((100_000,), 300.0, dtype=torch.float16)
    strided = torch.full((400, 250), 300.0, dtype=torch.float16).t()  # read through its norm
    for grads in ([big], [strided]):
        assert bool(nonfinite_flag(grads, "skip", squared=squared))
    assert float32_norms([big])[0].dtype == torch.float32
    torch.testing.assert_close(float32_norms([big])[0], torch.tensor(300.0 * 100_000**0.5), rtol=1e-3, atol=0)
