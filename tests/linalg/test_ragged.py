"""precond.linalg ragged buckets and the block sign sketch, against direct per-segment constructions."""

from __future__ import annotations

import math

import pytest
import torch

from precond.linalg import block_sign_sketch, pad_buckets, padded_widths, segment_pcg


@pytest.mark.parametrize("growth", [1.25, 1.5, 2.0])
def test_widths_are_the_smallest_power_ceiling_and_bound_the_padding(growth: float) -> None:
    counts = torch.arange(0, 3000)
    w = padded_widths(counts, growth)
    assert int(w[0]) == 0
    powers = sorted({math.ceil(growth**k - 1e-9) for k in range(60)})
    for c in range(1, 3000, 7):
        assert int(w[c]) == min(p for p in powers if p >= c)
    assert bool((w[1:] >= counts[1:]).all())
    assert bool((w[1:] <= torch.ceil(growth * counts[1:]) + 1).all())


def test_buckets_cover_every_nonempty_segment_once_in_csr_order() -> None:
    counts = torch.tensor([3, 0, 1, 7, 7, 2, 0, 40, 5])
    buckets = pad_buckets(counts)
    seen = torch.cat([b.segments for b in buckets])
    assert sorted(seen.tolist()) == [0, 2, 3, 4, 5, 7, 8]
    indptr = torch.cumsum(counts, 0) - counts
    for b in buckets:
        assert b.positions.shape == (b.segments.numel(), b.width)
        for row, seg in enumerate(b.segments.tolist()):
            c = int(counts[seg])
            expected = list(range(int(indptr[seg]), int(indptr[seg]) + c)) + [-1] * (b.width - c)
            assert b.positions[row].tolist() == expected
    assert [c.segments.tolist() for c in buckets[-1].chunks(1)] == [[s] for s in buckets[-1].segments.tolist()]
    with pytest.raises(ValueError, match="`growth` must be"):
        padded_widths(counts, 1.0)


def _ill_conditioned(B: int, w: int, d: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    scale = torch.logspace(0, -math.log10(cond), d, dtype=torch.float64)
    return torch.randn(B, w, d, generator=g, dtype=torch.float64) @ Q * scale


def test_sign_sketch_is_a_sum_of_signed_blocks() -> None:
    W = _ill_conditioned(3, 10, 4, 1.0, 0)
    SW = block_sign_sketch(W, 4, torch.Generator().manual_seed(1))
    sign = torch.randint(0, 2, (3, 12), generator=torch.Generator().manual_seed(1)).double() * 2 - 1
    Wp = torch.cat([W, torch.zeros(3, 2, 4, dtype=torch.float64)], 1) * sign[:, :, None]
    torch.testing.assert_close(SW, Wp[:, 0:4] + Wp[:, 4:8] + Wp[:, 8:12])
    with pytest.raises(ValueError, match="`sketch_rows` must be ≥ 1"):
        block_sign_sketch(W, 0, torch.Generator())


def test_sketch_preconditioner_bounds_the_condition_and_the_pcg_iterations() -> None:
    """``κ(H) ≈ 10⁸``; with the Cholesky factor of the ``4d``-row sketch's Gram, ``κ`` after preconditioning is
    ``O(1)`` and PCG needs a small number of iterations independent of ``κ(H)``; plain CG needs more than ``3d``."""
    B, w, d = 6, 2000, 32
    W = _ill_conditioned(B, w, d, 1e4, 2)
    H = W.mT @ W + 1e-10 * torch.eye(d, dtype=torch.float64)
    SW = block_sign_sketch(W, 4 * d, torch.Generator().manual_seed(3))
    L = torch.linalg.cholesky(SW.mT @ SW + 1e-10 * torch.eye(d, dtype=torch.float64))
    Linv = torch.linalg.inv(L)
    pre_cond = torch.linalg.cond(Linv @ H @ Linv.mT)
    assert float(torch.linalg.cond(H).min()) > 1e7
    assert float(pre_cond.max()) < 30.0
    b = (W.mT @ torch.randn(B, w, 1, dtype=torch.float64))[:, :, 0]

    def matvec(p: torch.Tensor) -> torch.Tensor:
        return (H @ p[:, :, None])[:, :, 0]

    kw = {"tol": 1e-10, "max_iter": 2000}
    _, plain, ok_plain = segment_pcg(matvec, b, **kw)  # type: ignore[arg-type]
    _, pre, ok_pre = segment_pcg(
        matvec,
        b,
        precond=lambda r: torch.cholesky_solve(r[:, :, None], L)[:, :, 0],
        **kw,  # type: ignore[arg-type]
    )
    assert bool(ok_plain.all()) and bool(ok_pre.all())
    assert int(plain.min()) > 3 * d
    assert int(pre.max()) * 4 <= int(plain.min())
