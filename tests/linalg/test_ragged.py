"""precond.linalg ragged buckets, the sign sketches and the CSR segment products, against direct per-segment
constructions."""

from __future__ import annotations

import math

import pytest
import torch

from precond.linalg import (
    block_sign_sketch,
    pad_buckets,
    padded_widths,
    segment_csr,
    segment_dot,
    segment_pcg,
    segment_sign_sketch,
)


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


def _segments(counts: list[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indptr, columns)`` of segments with ``counts`` entries at distinct ascending columns of ``0 … n−1``."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randperm(n, generator=g)[:c].sort().values for c in counts]
    indptr = torch.tensor([0, *torch.cumsum(torch.tensor(counts), 0).tolist()])
    return indptr, torch.cat(cols)


def test_segment_products_equal_per_segment_dense_products() -> None:
    counts, n, d = [3, 0, 7, 1, 12], 15, 4
    indptr, cols = _segments(counts, n, 0)
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(len(counts), d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g).double()
    vals = torch.randn(cols.numel(), generator=g, dtype=torch.float64)
    dots, spmm = [], torch.zeros(len(counts), d, dtype=torch.float64)
    for i in range(len(counts)):  # the oracle: one segment at a time
        seg = cols[indptr[i] : indptr[i + 1]]
        dots.append(Y[seg] @ X[i])
        spmm[i] = vals[indptr[i] : indptr[i + 1]] @ Y[seg]
    torch.testing.assert_close(segment_dot(indptr, cols, X, Y), torch.cat(dots), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(segment_csr(indptr, cols, vals, n) @ Y, spmm, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("s", [1, 3, 5, 16])
def test_segment_sign_sketch_sums_the_entries_of_each_residue_with_signs(s: int) -> None:
    """With ``Y = I`` the sketch is its own sign matrix: sketch row ``h`` of segment ``i`` holds ``±1`` exactly at
    the columns of the entries at positions ``p ≡ h (mod s)`` (the hash of :func:`block_sign_sketch`)."""
    counts, n = [3, 0, 7, 1, 12], 15
    indptr, cols = _segments(counts, n, 2)
    SW = segment_sign_sketch(indptr, cols, torch.eye(n, dtype=torch.float64), s, torch.Generator().manual_seed(3))
    assert SW.shape == (len(counts), s, n)
    expected = torch.zeros(len(counts), s, n, dtype=torch.float64)
    for i in range(len(counts)):
        for p, j in enumerate(cols[indptr[i] : indptr[i + 1]].tolist()):
            expected[i, p % s, j] = 1.0
    torch.testing.assert_close(SW.abs(), expected, rtol=0, atol=0)
    assert bool((SW < 0).any()) and bool((SW > 0).any())  # random signs
    if s >= max(counts):  # every entry alone in its sketch row: the sketched Gram is the exact Gram
        Y = torch.randn(n, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        SY = segment_sign_sketch(indptr, cols, Y, s, torch.Generator().manual_seed(5))
        for i in range(len(counts)):
            W = Y[cols[indptr[i] : indptr[i + 1]]]
            torch.testing.assert_close(SY[i].T @ SY[i], W.T @ W, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="`sketch_rows` must be ≥ 1"):
        segment_sign_sketch(indptr, cols, torch.eye(n), 0, torch.Generator())


def test_compact_indices_give_the_same_products_bitwise() -> None:
    """int32 CSR indices (:func:`compact_indices`) change no bit of :func:`segment_csr` products or
    :func:`segment_dot`; indices that are already int32 are returned as they are."""
    from precond.linalg import compact_indices, segment_csr, segment_dot

    g = torch.Generator().manual_seed(4)
    counts = torch.randint(0, 9, (40,), generator=g)
    indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    columns = torch.cat([torch.randperm(30, generator=g)[: int(c)].sort().values for c in counts])
    small = compact_indices(indptr, columns)
    assert small[0].dtype == torch.int32 and small[1].dtype == torch.int32
    assert compact_indices(*small)[0] is small[0]
    values = torch.randn(columns.numel(), generator=g)
    X, Y = torch.randn(40, 5, generator=g), torch.randn(30, 5, generator=g)
    assert torch.equal(segment_csr(*small, values, 30) @ Y, segment_csr(indptr, columns, values, 30) @ Y)
    assert torch.equal(segment_dot(*small, X, Y), segment_dot(indptr, columns, X, Y))
    dense = torch.zeros(40, 30)
    rows = torch.repeat_interleave(torch.arange(40), counts)
    dense[rows, columns] = values
    torch.testing.assert_close(segment_csr(*small, values, 30) @ Y, dense @ Y)


def test_segment_dot_into_a_kept_buffer() -> None:
    """``out=``: the product lands in the caller's buffer (same storage, same numbers as without it) whatever the
    buffer held before (NaN, inf: torch scales old values by beta = 0, which would keep a NaN); a buffer of the wrong
    shape or dtype is refused; with autograd on, the out-of-place path keeps the graph."""
    counts, n, d = [3, 0, 7, 1, 12], 15, 4
    indptr, cols = _segments(counts, n, 0)
    g = torch.Generator().manual_seed(2)
    X, Y = torch.randn(len(counts), d, generator=g), torch.randn(n, d, generator=g)
    expected = segment_dot(indptr, cols, X, Y)
    for junk in (math.nan, math.inf, 7.0):
        buf = torch.full((cols.numel(),), junk)
        got = segment_dot(indptr, cols, X, Y, out=buf)
        assert got.data_ptr() == buf.data_ptr() and torch.equal(got, expected)
    with pytest.raises(ValueError, match="`out` must be a contiguous"):
        segment_dot(indptr, cols, X, Y, out=torch.empty(cols.numel() + 1))
    with pytest.raises(ValueError, match="`out` must be a contiguous"):
        segment_dot(indptr, cols, X, Y, out=torch.empty(cols.numel(), dtype=torch.float64))
    Xg = X.clone().requires_grad_()
    segment_dot(indptr, cols, Xg, Y).sum().backward()
    seg = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    torch.testing.assert_close(Xg.grad, torch.zeros_like(X).index_add_(0, seg, Y[cols]))


def test_segment_pcg_with_a_given_initial_residual_is_the_same_run() -> None:
    """``r0 = b − H x0`` handed in replaces the first matvec: same iterates bit for bit, one matvec fewer; ``r0``
    without ``x0`` is refused."""
    g = torch.Generator().manual_seed(7)
    A = torch.randn(6, 5, 5, generator=g, dtype=torch.float64)
    H = A @ A.mT + 0.1 * torch.eye(5, dtype=torch.float64)
    b, x0 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    calls = []

    def matvec(p: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return (H @ p[:, :, None])[:, :, 0]

    x_a, it_a, ok_a = segment_pcg(matvec, b, tol=1e-12, max_iter=50, x0=x0)
    n_a = len(calls)
    r0 = b - (H @ x0[:, :, None])[:, :, 0]
    x_b, it_b, ok_b = segment_pcg(matvec, b, tol=1e-12, max_iter=50, x0=x0, r0=r0)
    assert len(calls) - n_a == n_a - 1
    assert torch.equal(x_a, x_b) and torch.equal(it_a, it_b) and bool(ok_a.all() and ok_b.all())
    torch.testing.assert_close(x_a, torch.linalg.solve(H, b), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="`r0` is the residual of a warm start"):
        segment_pcg(matvec, b, tol=1e-12, max_iter=5, r0=r0)
