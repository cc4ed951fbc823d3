"""The scaling-domain machinery (absorption, log fallback, NumPy products) and SNS's sparsification, each
checked against the log-domain reference or a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import precond.ot._scaling as scaling
import precond.ot._sns as sns
from precond.ot import sinkhorn


def _density_problem(n: int, power: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two Gaussian mixtures on [0, 1] (with a floor, so full support), cost |x − y|^power normalized to 1."""
    x = np.linspace(0, 1, n)
    a = np.exp(-((x - 0.2) ** 2) / 0.01) + np.exp(-((x - 0.5) ** 2) / 0.01)
    b = np.exp(-((x - 0.4) ** 2) / 0.02) + np.exp(-((x - 0.8) ** 2) / 0.02)
    a, b = a + 1e-3 * a.max(), b + 1e-3 * b.max()
    M = np.abs(x[:, None] - x[None, :]) ** power
    return a / a.sum(), b / b.sum(), M / M.max()


def test_scaling_sinkhorn_takes_the_log_domain_iterates() -> None:
    a, b, M = _density_problem(120, 2)
    reg = 2e-3  # potentials reach ~1/reg = 500 ≫ τ ≈ 71: the kernel must be re-formed along the way
    ref = sinkhorn(a, b, M, reg, method="sinkhorn_log", tol=1e-10, max_iter=50_000)
    fast = sinkhorn(a, b, M, reg, method="sinkhorn", tol=1e-10, max_iter=50_000)
    assert ref.converged and fast.converged
    assert fast.absorptions > 0 and ref.absorptions == 0
    assert abs(fast.iterations - ref.iterations) <= 1
    torch.testing.assert_close(fast.plan, ref.plan, atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.f - fast.f.mean(), ref.f - ref.f.mean(), atol=1e-9, rtol=0)


def test_absorbing_every_iteration_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, M = _density_problem(60, 2)
    ref = sinkhorn(a, b, M, 5e-3, method="sinkhorn_log", tol=1e-10)
    monkeypatch.setattr(scaling, "absorb_bound", lambda dtype: 1e-3)  # any move leaves e^{±τ}
    res = sinkhorn(a, b, M, 5e-3, method="sinkhorn", tol=1e-10)
    assert res.absorptions > 100  # every iteration until the moves shrink below e^{0.001}
    assert abs(res.iterations - ref.iterations) <= 1
    torch.testing.assert_close(res.plan, ref.plan, atol=1e-12, rtol=0)


def test_log_fallback_when_products_are_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, M = _density_problem(60, 2)
    ref = sinkhorn(a, b, M, 5e-3, method="sinkhorn_log", tol=1e-10)
    monkeypatch.setattr(scaling.ScaledKernel, "check", lambda self, s, t: "bad")  # as if K t underflowed
    res = sinkhorn(a, b, M, 5e-3, method="sinkhorn", tol=1e-10)
    assert res.converged and abs(res.iterations - ref.iterations) <= 1
    torch.testing.assert_close(res.plan, ref.plan, atol=1e-12, rtol=0)


def test_check_verdicts() -> None:
    cost = torch.rand(3, 4, dtype=torch.float64)
    ker = scaling.ScaledKernel(cost, 1.0, torch.zeros(3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    one, t = torch.ones(3, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    assert ker.check(one, t) == "ok"
    assert ker.check(one * math.exp(80.0), t) == "absorb"
    assert ker.check(one * math.exp(-80.0), t) == "absorb"
    assert ker.check(torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), t) == "bad"
    assert ker.check(torch.tensor([1.0, math.inf, 1.0], dtype=torch.float64), t) == "bad"
    assert ker.check(torch.tensor([1.0, math.nan, 1.0], dtype=torch.float64), t) == "bad"
    assert scaling.absorb_bound(torch.float64) == pytest.approx(70.8, abs=0.1)
    assert scaling.absorb_bound(torch.float32) == pytest.approx(8.7, abs=0.1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numpy_matvec_equals_torch(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.rand(37, 23, generator=g, dtype=dtype)
    x, y = torch.rand(23, generator=g, dtype=dtype), torch.rand(37, generator=g, dtype=dtype)
    for numpy_blas in (False, True):
        out, out_t = scaling.matvec(A, x, numpy_blas), scaling.matvec(A.T, y, numpy_blas)
        assert out.dtype == dtype and out_t.shape == (23,)
        torch.testing.assert_close(out, A @ x)
        torch.testing.assert_close(out_t, A.T @ y)


def _peaked_plan(n: int, seed: int = 0) -> torch.Tensor:
    M = torch.rand(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    plan = torch.exp(-M / 0.02)
    return plan / plan.sum()


def test_sampled_threshold_keeps_about_count_entries() -> None:
    plan = _peaked_plan(300)
    for count in (600, 3000):
        rho, estimate = sns.threshold(plan, count, None)
        kept = int((plan >= rho).sum())
        assert 0.6 * count <= kept <= 1.6 * count, (count, kept)
        assert 0.6 * kept <= estimate <= 1.6 * kept
        exact = torch.topk(plan.reshape(-1), count).values.min()
        assert 0.5 * float(exact) <= float(rho) <= 2.0 * float(exact)


def test_dropped_mass_rule_bounds_what_is_dropped() -> None:
    plan = _peaked_plan(300, seed=1)
    rho_count, _ = sns.threshold(plan, 600, None)
    for budget in (1e-1, 1e-2, 1e-3):
        rho, _ = sns.threshold(plan, 600, budget)
        dropped = float(plan[plan < rho].sum())
        assert float(rho) <= float(rho_count)  # only ever keeps more
        assert dropped <= 2.0 * budget, (budget, dropped)
    # A looser budget than what the count rule drops leaves the count rule in charge.
    assert float(sns.threshold(plan, 600, 1.0)[0]) == float(rho_count)


def test_sparsify_keeps_row_and_column_maxima_and_goes_dense() -> None:
    plan = _peaked_plan(200, seed=2)
    rows, cols, vals = sns.sparsify(plan, keep=1.0, dropped_mass=None)
    torch.testing.assert_close(vals, plan[rows, cols])
    kept = torch.zeros_like(plan, dtype=torch.bool)
    kept[rows, cols] = True
    assert bool(kept[torch.arange(200), plan.argmax(1)].all())
    assert bool(kept[plan.argmax(0), torch.arange(200)].all())
    assert rows.numel() < 0.05 * plan.numel()
    assert sns.sparsify(plan, keep=60.0, dropped_mass=None) is None  # past DENSE_FRACTION: use P itself


def test_sns_with_a_dense_hessian_converges_to_the_same_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, M = _density_problem(100, 2)
    ref = sinkhorn(a, b, M, 2e-3, method="sinkhorn_log", tol=1e-10, max_iter=50_000)
    monkeypatch.setattr(sns, "DENSE_FRACTION", 0.0)
    res = sinkhorn(a, b, M, 2e-3, method="sns", tol=1e-10)
    assert res.converged and res.newton_iterations > 0
    torch.testing.assert_close(res.plan, ref.plan, atol=1e-9, rtol=0)


@pytest.mark.parametrize("power", [2, 1])
def test_sns_iteration_savings_on_densities(power: int) -> None:
    """The SNS paper's claim on discretized densities (W2, W1): far fewer iterations than Sinkhorn."""
    a, b, M = _density_problem(300, power)
    reg = 1e-3
    ref = sinkhorn(a, b, M, reg, method="sinkhorn", tol=1e-8, max_iter=100_000)
    res = sinkhorn(a, b, M, reg, method="sns", tol=1e-8)
    assert ref.converged and res.converged and res.newton_iterations > 0
    torch.testing.assert_close(res.plan, ref.plan, atol=1e-8, rtol=0)
    # Measured: W2 2281 vs 53 (43×); W1 277 vs 105 (2.6×: a non-unique optimum, the paper needed N1 = 700 there).
    ratio = ref.iterations / res.iterations
    assert ratio >= {2: 25.0, 1: 2.0}[power], (ref.iterations, res.iterations)


def test_newton_iterates_keep_the_column_marginals_exact() -> None:
    """The line search is on the semi-dual: every Newton iterate has v = v*(u), so Pᵀ1 = b to rounding while
    P1 is still off (a joint (Δu, Δv) step left 4e-4 of column error at the third Newton step here)."""
    a, b, M = _density_problem(300, 2)
    b_t = torch.as_tensor(b)
    for newton_steps in range(1, 4):
        res = sinkhorn(a, b, M, 1e-3, method="sns", n1=300, max_iter=300 + newton_steps, warn=False)
        assert res.newton_iterations == newton_steps and not res.converged
        column_error = float((res.plan.sum(0) - b_t).abs().sum())
        row_error = float((res.plan.sum(1) - torch.as_tensor(a)).abs().sum())
        assert column_error <= 1e-12 and row_error >= 1e-5, (newton_steps, column_error, row_error)
