"""precond.linalg.pcg against dense float64 solves."""

from __future__ import annotations

import pytest
import torch

from precond.linalg import pcg


def _spd(n: int, cond: float = 1e3, batch: tuple[int, ...] = ()) -> torch.Tensor:
    q = torch.linalg.qr(torch.randn(*batch, n, n, dtype=torch.float64)).Q
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return q @ torch.diag_embed(s.expand(*batch, n)) @ q.transpose(-1, -2)


@pytest.mark.parametrize("precond", ["none", "jacobi", "callable"])
def test_pcg_matches_dense_solve(precond: str) -> None:
    a = _spd(40)
    d = torch.rand(40, dtype=torch.float64) * 100 + 1
    a = d[:, None] * a * d[None, :]  # badly scaled: Jacobi helps
    b = torch.randn(40, dtype=torch.float64)
    inv = 1.0 / torch.diagonal(a)
    p = {"none": None, "jacobi": inv, "callable": lambda r: r * inv}[precond]
    x, info = pcg(lambda v: v @ a, b, precond=p, tol=1e-12, max_iter=2000)
    assert info.converged
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-9)


def test_pcg_batched_and_warm_start() -> None:
    a = _spd(30, batch=(3,))
    b = torch.randn(3, 30, dtype=torch.float64)
    ref = torch.linalg.solve(a, b)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return (a @ v[..., None])[..., 0]

    x, info = pcg(matvec, b, tol=1e-12, max_iter=1000)
    assert info.converged and info.residual_norm < 1e-10
    torch.testing.assert_close(x, ref, rtol=1e-7, atol=1e-9)
    _, warm = pcg(matvec, b, tol=1e-12, max_iter=1000, x0=ref + 1e-9)
    assert warm.iterations < info.iterations


def test_pcg_semidefinite_rhs_in_range() -> None:
    # Graph Laplacian: null vector 1, b ⟂ 1 → CG from zero converges to the minimum-norm solution.
    w = torch.rand(20, 20, dtype=torch.float64)
    w = w + w.T
    lap = torch.diag(w.sum(1)) - w
    b = torch.randn(20, dtype=torch.float64)
    b -= b.mean()
    x, info = pcg(lambda v: lap @ v, b, tol=1e-12)
    assert info.converged
    torch.testing.assert_close(x, torch.linalg.pinv(lap) @ b, rtol=1e-8, atol=1e-10)


def test_pcg_reports_non_convergence() -> None:
    a = _spd(50, cond=1e8)
    _, info = pcg(lambda v: a @ v, torch.randn(50, dtype=torch.float64), tol=1e-14, max_iter=3)
    assert not info.converged and info.iterations == 3
    with pytest.raises(ValueError, match="tol"):
        pcg(lambda v: v, torch.ones(3), tol=-1.0)
