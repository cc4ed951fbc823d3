"""precond.linalg.segment_pcg against dense float64 per-segment solves (oracle: ``torch.linalg.solve``)."""

from __future__ import annotations

import pytest
import torch

from precond.linalg import segment_pcg


def _problem(counts: list[int], d: int, seed: int, cond: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge normal matrices ``H_i = A_iᵀA_i + λ_i I`` of designs with ``counts[i]`` rows and condition ``cond``,
    and right-hand sides ``b_i = A_iᵀ t_i``."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    H, b = [], []
    for c in counts:
        A = torch.randn(c, d, generator=g, dtype=torch.float64) @ Q * scale
        lam = float(torch.rand((), generator=g)) * 1e-3
        H.append(A.T @ A + lam * torch.eye(d, dtype=torch.float64))
        b.append(A.T @ torch.randn(c, generator=g, dtype=torch.float64))
    return torch.stack(H), torch.stack(b)


def _matvec(H: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda p: (H @ p[:, :, None])[:, :, 0]


def test_pcg_per_segment_solves_equal_dense() -> None:
    H, b = _problem([40, 3, 0, 100, 7], d=6, seed=2, cond=30.0)
    H[2] = torch.eye(6, dtype=torch.float64)  # empty segment: H = I, b = 0 → x = 0 with no iteration
    x, its, ok = segment_pcg(_matvec(H), b, tol=1e-13, max_iter=500)
    assert bool(ok.all())
    assert int(its[2]) == 0
    torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=1e-9, atol=1e-10)


def test_exact_preconditioner_converges_in_one_step() -> None:
    H, b = _problem([50, 80], d=8, seed=1, cond=1e4)
    Hinv = torch.linalg.inv(H)
    x, its, ok = segment_pcg(_matvec(H), b, tol=1e-10, max_iter=50, precond=_matvec(Hinv))
    assert bool(ok.all()) and its.tolist() == [1, 1]
    torch.testing.assert_close(x, torch.linalg.solve(H, b), rtol=1e-8, atol=1e-10)


def test_pcg_honours_per_segment_tolerance_and_warm_start() -> None:
    H, b = _problem([60, 60, 60], d=8, seed=3, cond=1e3)
    tol = torch.tensor([1e-1, 1e-6, 1e-12], dtype=torch.float64)
    x, its, ok = segment_pcg(_matvec(H), b, tol=tol, max_iter=1000)
    assert bool(ok.all())
    resid = torch.linalg.vector_norm(b - (H @ x[:, :, None])[:, :, 0], dim=1)
    assert bool((resid <= tol * torch.linalg.vector_norm(b, dim=1) * (1 + 1e-8)).all())
    assert int(its[0]) < int(its[1]) < int(its[2])
    exact = torch.linalg.solve(H, b)
    _, its_warm, _ = segment_pcg(_matvec(H), b, tol=1e-12, max_iter=1000, x0=exact + 1e-9)
    assert int(its_warm.max()) < int(its[2])


def test_pcg_max_iter_caps_and_reports_unconverged() -> None:
    H, b = _problem([50, 50], d=10, seed=4, cond=1e6)
    _, its, ok = segment_pcg(_matvec(H), torch.ones_like(b), tol=1e-14, max_iter=3)
    assert its.tolist() == [3, 3]
    assert not bool(ok.any())


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"tol": 1e-3, "max_iter": -1}, r"`max_iter` must be ≥ 0"), ({"tol": -1.0, "max_iter": 3}, r"`tol` must be")],
)
def test_bad_arguments_are_named(kw: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        segment_pcg(lambda p: p, torch.ones(2, 3), **kw)
