"""precond.linalg segmented kernels against dense float64 per-segment solves (oracle: ``torch.linalg.solve``)."""

from __future__ import annotations

import pytest
import torch

from precond.linalg import segment_gram_matvec, segment_pcg, segment_sketch_factor, triangular_precond


def _problem(
    counts: list[int], d: int, seed: int, cond: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``seg`` sorted by segment, design ``A`` whose columns are scaled to condition ``cond``, ridge ``lam``."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    scale = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    A = (
        torch.randn(seg.numel(), d, generator=g, dtype=torch.float64)
        @ torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
        * scale
    )
    lam = torch.rand(len(counts), generator=g, dtype=torch.float64) * 1e-3
    return seg, A, lam


def _dense(seg: torch.Tensor, A: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    d = A.shape[1]
    return torch.stack([A[seg == i].T @ A[seg == i] + lam[i] * torch.eye(d, dtype=A.dtype) for i in range(len(lam))])


def test_gram_matvec_equals_dense_normal_matrices() -> None:
    seg, A, lam = _problem([5, 0, 12, 1, 30], d=4, seed=0)
    perm = torch.randperm(seg.numel(), generator=torch.Generator().manual_seed(1))  # any order of observations
    x = torch.randn(5, 4, dtype=torch.float64)
    got = segment_gram_matvec(seg[perm], A[perm], x, lam)
    torch.testing.assert_close(got, (_dense(seg, A, lam) @ x[:, :, None])[:, :, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sketched", [False, True])
def test_pcg_per_segment_solves_equal_dense(sketched: bool) -> None:
    seg, A, lam = _problem([40, 3, 0, 100, 7], d=6, seed=2, cond=30.0)
    lam[2] = 1.0  # empty segment: H = λ I, b = 0 → x = 0 with no iteration
    b = torch.zeros(5, 6, dtype=torch.float64)
    b.index_add_(0, seg, A * torch.randn(seg.numel(), 1, dtype=torch.float64))
    H = _dense(seg, A, lam)
    pre = triangular_precond(segment_sketch_factor(seg, A, lam, 24, 4, torch.Generator().manual_seed(0)))
    x, its, ok = segment_pcg(
        lambda p: segment_gram_matvec(seg, A, p, lam), b, tol=1e-13, max_iter=500, precond=pre if sketched else None
    )
    assert bool(ok.all())
    assert int(its[2]) == 0
    torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=1e-9, atol=1e-10)


def test_pcg_honours_per_segment_tolerance_and_warm_start() -> None:
    seg, A, lam = _problem([60, 60, 60], d=8, seed=3, cond=1e3)
    b = torch.zeros(3, 8, dtype=torch.float64)
    b.index_add_(0, seg, A * torch.randn(seg.numel(), 1, dtype=torch.float64))
    H = _dense(seg, A, lam)
    tol = torch.tensor([1e-1, 1e-6, 1e-12], dtype=torch.float64)
    x, its, ok = segment_pcg(lambda p: segment_gram_matvec(seg, A, p, lam), b, tol=tol, max_iter=1000)
    assert bool(ok.all())
    resid = torch.linalg.vector_norm(b - (H @ x[:, :, None])[:, :, 0], dim=1)
    assert bool((resid <= tol * torch.linalg.vector_norm(b, dim=1) * (1 + 1e-8)).all())
    assert int(its[0]) < int(its[1]) < int(its[2])
    exact = torch.linalg.solve(H, b)
    _, its_warm, _ = segment_pcg(
        lambda p: segment_gram_matvec(seg, A, p, lam), b, tol=1e-12, max_iter=1000, x0=exact + 1e-9
    )
    assert int(its_warm.max()) < int(its[2])


def test_pcg_max_iter_caps_and_reports_unconverged() -> None:
    seg, A, lam = _problem([50, 50], d=10, seed=4, cond=1e6)
    b = torch.ones(2, 10, dtype=torch.float64)
    _, its, ok = segment_pcg(lambda p: segment_gram_matvec(seg, A, p, lam), b, tol=1e-14, max_iter=3)
    assert its.tolist() == [3, 3]
    assert not bool(ok.any())


def test_sketch_factor_is_exact_on_small_segments_and_conditions_large_ones() -> None:
    d, s = 8, 32
    seg, A, lam = _problem([20, 32, 400, 2000], d=d, seed=5, cond=1e4)
    R = segment_sketch_factor(seg, A, lam, s, 4, torch.Generator().manual_seed(1))
    H = _dense(seg, A, lam)
    torch.testing.assert_close(R[:2].transpose(1, 2) @ R[:2], H[:2], rtol=1e-10, atol=1e-12)  # not sketched
    for i in (2, 3):
        Ri = torch.linalg.inv(R[i])
        cond_pre = torch.linalg.cond(Ri.T @ H[i] @ Ri)
        assert float(torch.linalg.cond(H[i])) > 1e5
        assert float(cond_pre) < 50.0


def test_sketch_preconditioner_needs_fewer_iterations_than_plain_cg() -> None:
    """Plain CG on ``κ(H) ≈ 10⁸`` needs > 3d iterations; the sketch factor (``κ ≈ 5`` after preconditioning)
    needs ``O(log 1/tol)`` independent of ``κ(H)``."""
    seg, A, lam = _problem([600] * 6, d=32, seed=6, cond=1e4)
    b = torch.zeros(6, 32, dtype=torch.float64)
    b.index_add_(0, seg, A * torch.randn(seg.numel(), 1, dtype=torch.float64))
    R = segment_sketch_factor(seg, A, lam, 128, 4, torch.Generator().manual_seed(2))
    kw = {"tol": 1e-10, "max_iter": 2000}
    _, plain, ok_plain = segment_pcg(lambda p: segment_gram_matvec(seg, A, p, lam), b, **kw)  # type: ignore[arg-type]
    _, pre, ok_pre = segment_pcg(
        lambda p: segment_gram_matvec(seg, A, p, lam),
        b,
        precond=triangular_precond(R),
        **kw,  # type: ignore[arg-type]
    )
    assert bool(ok_plain.all()) and bool(ok_pre.all())
    assert int(plain.min()) > 3 * 32
    assert int(pre.max()) * 4 <= int(plain.min())


def test_singular_segment_gets_identity_factor() -> None:
    seg, A, lam = _problem([2, 50], d=5, seed=7)
    lam = torch.zeros(2, dtype=torch.float64)  # segment 0: 2 rows, d = 5, λ = 0 → rank deficient
    R = segment_sketch_factor(seg, A, lam, 20, 2, torch.Generator().manual_seed(3))
    torch.testing.assert_close(R[0], torch.eye(5, dtype=torch.float64))
    assert bool(torch.isfinite(R).all())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: segment_pcg(lambda p: p, torch.ones(2, 3), tol=1e-3, max_iter=-1), r"`max_iter` must be ≥ 0"),
        (lambda: segment_pcg(lambda p: p, torch.ones(2, 3), tol=-1.0, max_iter=3), r"`tol` must be finite and ≥ 0"),
        (
            lambda: segment_sketch_factor(
                torch.zeros(3, dtype=torch.int64), torch.ones(3, 2), torch.ones(1), 2, 3, torch.Generator()
            ),
            r"1 ≤ `nnz` ≤ `sketch_rows`",
        ),
    ],
)
def test_bad_arguments_are_named(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call()
