"""Issue 11 hardening of precond.ot: tolerances consistent with dtype and mass check, the iteration budget under
ε-scaling, input types and strides, NumPy warnings, and +inf costs — every method, against POT or float64."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch

from precond.ot import METHODS, ConvergenceWarning, dist, sinkhorn


def _problem(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 1.0)
    return a / a.sum(), b / b.sum(), M / M.max()


def _error64(plan: torch.Tensor, a: np.ndarray, b: np.ndarray) -> float:
    """L1 marginal error of ``plan`` against ``(a, b)``, all in float64 (the oracle of ``marginal_error``)."""
    p = plan.double().numpy()
    return float(np.abs(p.sum(1) - a).sum() + np.abs(p.sum(0) - b).sum())


def _float32_normalized(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights normalized in float32, then off in mass by a relative 3e-7 (under the 1e-6 the check allows)."""
    rng = np.random.default_rng(seed)
    a = rng.random(n).astype(np.float32) + np.float32(0.1)
    b = rng.random(n).astype(np.float32) + np.float32(0.1)
    a, b = a / a.sum(), b / b.sum()
    return a, (b * np.float32(1 + 3e-7)).astype(np.float32)


# Item 8: tolerances.


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", METHODS)
def test_mass_mismatch_within_the_check_still_converges(method: str, dtype: torch.dtype) -> None:
    a, b = _float32_normalized(200, seed=1)
    M = _problem(200, 200, seed=1)[2]
    sa, sb = float(a.astype(np.float64).sum()), float(b.astype(np.float64).sum())
    assert 1e-7 < abs(sa - sb) / sa < 1e-6  # passes the mass check, and > the float64 default tol 1e-9
    res = sinkhorn(a, b, M, 0.05, method=method, dtype=dtype, max_iter=3000, warn=False)
    assert res.converged and res.iterations < 200, res.marginal_error  # POT: ~20; the old code ran to max_iter
    assert res.status == "converged"
    assert res.b_scale == pytest.approx(sa / sb, rel=1e-12)
    b_solved = b.astype(np.float64) * res.b_scale
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}[dtype]
    assert _error64(res.plan, a.astype(np.float64), b_solved) <= tol
    G = ot.sinkhorn(a.astype(np.float64), b_solved, M, 0.05, stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(res.plan.double().numpy(), G, atol={torch.float64: 1e-11, torch.float32: 1e-6}[dtype])


@pytest.mark.parametrize("method", METHODS)
def test_float32_default_tol_converges_and_is_honest(method: str) -> None:
    a, b, M = (x.astype(np.float32) for x in _problem(150, 120, seed=2))
    res = sinkhorn(a, b, M, 0.05, method=method, max_iter=5000, warn=False)
    assert res.plan.dtype == torch.float32
    assert res.converged and res.iterations < 200, (res.iterations, res.marginal_error)
    # converged means the float64 error of the returned plan (against the b actually solved) is ≤ tol = 1e-5.
    err = _error64(res.plan, a.astype(np.float64), b.astype(np.float64) * res.b_scale)
    assert err <= 1e-5 and res.marginal_error == pytest.approx(err, abs=1e-7)  # b · b_scale rounded to float32
    ref = sinkhorn(*_problem(150, 120, seed=2), 0.05, tol=1e-12)
    torch.testing.assert_close(res.plan.double(), ref.plan, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_unreachable_tol_stalls_instead_of_spinning(method: str) -> None:
    a, b, M = (x.astype(np.float32) for x in _problem(100, 100, seed=3))
    with pytest.warns(ConvergenceWarning, match="stopped decreasing"):
        res = sinkhorn(a, b, M, 0.05, method=method, tol=1e-10, max_iter=20_000)
    assert not res.converged and res.status == "stalled"
    assert res.iterations < 500  # the old code ran all 20,000
    assert res.marginal_error < 1e-5  # it did get to the float32 floor
    # Never "converged" through a slack: every run's verdict agrees with the float64 error of its plan.
    for tol in (1e-9, 3e-7, 1e-6, 1e-5):
        out = sinkhorn(a, b, M, 0.05, method=method, tol=tol, max_iter=20_000, warn=False)
        assert out.iterations < 20_000
        if out.converged:
            assert _error64(out.plan, a.astype(np.float64), b.astype(np.float64) * out.b_scale) <= tol


def test_default_tol_follows_dtype_and_mass() -> None:
    a, b, M = _problem(40, 30, seed=4)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        for mass in (1.0, 7.0):
            res = sinkhorn(mass * a, mass * b, M, 0.1, dtype=dtype)
            assert res.converged and res.marginal_error <= tol * mass
            # The loop stops at the first iterate under tol: one iteration less would not have been enough.
            assert res.history[-2][1] > tol * mass - 8 * torch.finfo(dtype).eps * mass


# Item 9: ε-scaling within max_iter.


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_iter", [0, 1, 5, 40, 120])
def test_epsilon_scaling_counts_against_max_iter(method: str, max_iter: int) -> None:
    a, b, M = _problem(60, 50, seed=5)
    res = sinkhorn(a, b, M, 1e-3, method=method, epsilon_scaling=True, max_iter=max_iter, warn=False)
    assert res.iterations <= max_iter  # the old code ran 42 iterations of annealing levels whatever max_iter
    assert res.status == ("converged" if res.converged else "max_iter")


# Item 10: input types, strides, warnings.


@pytest.mark.parametrize("method", METHODS)
def test_negative_strides_are_accepted(method: str) -> None:
    a, b, M = _problem(30, 20, seed=6)
    res = sinkhorn(a[::-1], b[::-1], M[::-1, ::-1], 0.05, method=method, tol=1e-11)
    ref = sinkhorn(a[::-1].copy(), b[::-1].copy(), M[::-1, ::-1].copy(), 0.05, method=method, tol=1e-11)
    assert res.converged
    torch.testing.assert_close(res.plan, ref.plan, atol=0, rtol=0)
    cols = sinkhorn(a, None, np.asfortranarray(M)[:, ::2], 0.05, method=method, tol=1e-11)
    assert cols.converged and cols.plan.shape == (30, 10)


def test_dist_accepts_any_strides() -> None:
    x = np.random.default_rng(7).normal(size=(9, 4))
    for xs, ys in ((x[::-1], x), (x[:, ::-1], x[::2, ::-1]), (x.T.copy().T, x[::-3])):
        np.testing.assert_allclose(dist(xs, ys).numpy(), ot.dist(np.ascontiguousarray(xs), ys), atol=1e-12)
    np.testing.assert_allclose(dist(x[::-1], metric="cityblock").numpy(), ot.dist(x[::-1], x[::-1], "cityblock"))


@pytest.mark.parametrize("method", METHODS)
def test_empty_weights_of_any_type_are_uniform(method: str) -> None:
    M = _problem(12, 8, seed=8)[2]
    ref = sinkhorn(None, None, M, 0.1, method=method, tol=1e-11)
    for empty in ([], np.array([]), torch.tensor([]), torch.empty(0, dtype=torch.float64)):
        res = sinkhorn(empty, empty, M, 0.1, method=method, tol=1e-11)
        torch.testing.assert_close(res.plan, ref.plan, atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_numpy_scalars_are_accepted(method: str) -> None:
    a, b, M = _problem(20, 15, seed=9)
    ref = sinkhorn(a, b, M, 0.05, method=method, tol=1e-10, max_iter=500, n1=5, keep=2.0)
    res = sinkhorn(
        a, b, M, np.float64(0.05), method=method, tol=np.float64(1e-10), max_iter=np.int64(500), n1=np.int32(5),
        keep=np.float32(2.0),
    )  # fmt: skip
    assert res.converged and res.reg == 0.05 and isinstance(res.reg, float)
    torch.testing.assert_close(res.plan, ref.plan, atol=0, rtol=0)
    capped = sinkhorn(a, b, M, np.float32(0.05), method=method, max_iter=np.int16(3), warn=False)
    assert capped.iterations == 3
    reg0 = torch.tensor(0.05, dtype=torch.float64)
    zero_d = sinkhorn(a, b, M, reg0, method=method, tol=np.array(1e-10), max_iter=torch.tensor(500), n1=5)
    torch.testing.assert_close(zero_d.plan, ref.plan, atol=0, rtol=0)


BAD_TYPES = [
    ({"reg": "0.1"}, "`reg` must be a real number"),
    ({"reg": True}, "`reg` must be a real number"),
    ({"reg": None}, "`reg` must be a real number"),
    ({"tol": "1e-9"}, "`tol` must be a real number"),
    ({"max_iter": 5.0}, "`max_iter` must be an integer"),
    ({"max_iter": True}, "`max_iter` must be an integer"),
    ({"n1": "3"}, "`n1` must be an integer"),
    ({"keep": np.bool_(True)}, "`keep` must be a real number"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("change", "message"), BAD_TYPES)
def test_wrong_types_raise_type_error(method: str, change: dict, message: str) -> None:
    args = {"a": [0.5, 0.5], "b": [0.5, 0.5], "M": [[0.0, 1.0], [1.0, 0.0]], "reg": 0.1, "method": method} | change
    with pytest.raises(TypeError, match=message):
        sinkhorn(**args)


def test_non_numeric_arrays_name_the_argument() -> None:
    with pytest.raises(ValueError, match="`M` must hold real numbers, got ndarray of dtype object"):
        sinkhorn(None, None, np.array([[0.0, "x"], [1.0, 0.0]], dtype=object), 0.1)
    with pytest.raises(ValueError, match="`a` must hold real numbers"):
        sinkhorn(["p", "q"], None, np.eye(2), 0.1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_hard_problems_leak_no_numpy_warnings(method: str, dtype: type) -> None:
    """Costs spread over two orders of magnitude, reg = 1e-4: K t underflows, the iteration is redone in the
    log domain (the old code let ``RuntimeWarning: invalid value encountered in matmul`` escape)."""
    rng = np.random.default_rng(0)
    n = 100
    M = (rng.random((n, n)) * rng.choice([1, 100], size=(n, n))).astype(dtype)
    a = rng.random(n) ** 8
    a /= a.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = sinkhorn(a.astype(dtype), a[::-1].astype(dtype), M, 1e-4, method=method, max_iter=300, warn=False)
    assert torch.isfinite(res.plan).all() and np.isfinite(res.marginal_error)
    assert res.marginal_error < 2.0  # a plan, even if unconverged: ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ ≤ 2·mass


# Item 11 (part): +inf costs.


def _forbidden(
    n: int, m: int, seed: int, fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a, b, M = _problem(n, m, seed)
    mask = np.random.default_rng(seed + 100).random((n, m)) < fraction
    Minf = M.copy()
    Minf[mask] = np.inf
    return a, b, Minf, mask


@pytest.mark.parametrize("epsilon_scaling", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_infinite_costs_match_pot_with_a_huge_finite_cost(method: str, epsilon_scaling: bool) -> None:
    a, b, Minf, mask = _forbidden(80, 70, seed=10)
    reg = 5e-3 if method == "sns" else 0.05  # small enough for SNS to reach its Newton stage
    big = np.where(mask, 1e4, Minf)  # exp(−1e4/reg) is 0 in float64: the same problem for POT
    G = ot.bregman.sinkhorn_log(a, b, big, reg, stopThr=1e-14, numItermax=100_000)
    res = sinkhorn(a, b, Minf, reg, method=method, tol=1e-11, epsilon_scaling=epsilon_scaling, sparse_plan=True)
    assert res.converged and torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    assert float(res.plan[torch.as_tensor(mask)].abs().max()) == 0.0  # forbidden pairs carry exactly nothing
    np.testing.assert_allclose(res.plan.numpy(), G, atol=1e-11)
    assert res.cost == pytest.approx(float((G * np.where(mask, 0.0, Minf)).sum()), rel=1e-9)
    if method == "sns":
        assert res.newton_iterations > 0 and res.plan_sparse is not None
        kept = res.plan_sparse.coalesce().indices().numpy()
        assert not mask[kept[0], kept[1]].any()


@pytest.mark.parametrize("method", METHODS)
def test_infinite_costs_in_float32_and_on_zero_mass_points(method: str) -> None:
    a, b, Minf, _ = _forbidden(40, 40, seed=11, fraction=0.3)
    a[[0, 5]] = 0.0  # zero-mass rows may be all +inf
    a /= a.sum()
    Minf[[0, 5]] = np.inf
    with np.errstate(divide="ignore"):  # POT takes log(0) on the zero-mass rows
        G = ot.bregman.sinkhorn_log(a, b, np.where(np.isinf(Minf), 1e4, Minf), 0.05, stopThr=1e-14, numItermax=10**5)
    ref = torch.as_tensor(G)
    res = sinkhorn(a, b, Minf, 0.05, method=method, tol=1e-11)
    assert res.converged and float(res.plan[torch.as_tensor(np.isinf(Minf))].abs().max()) == 0.0
    torch.testing.assert_close(res.plan, ref, atol=1e-11, rtol=0)
    res32 = sinkhorn(a.astype(np.float32), b.astype(np.float32), Minf.astype(np.float32), 0.05, method=method)
    assert res32.converged and res32.plan.dtype == torch.float32
    torch.testing.assert_close(res32.plan.double(), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_points_with_mass_and_only_infinite_costs_are_infeasible(method: str) -> None:
    a, b, M = _problem(6, 5, seed=12)
    row = M.copy()
    row[2] = np.inf
    with pytest.raises(ValueError, match="infeasible problem: row 2 of `M`"):
        sinkhorn(a, b, row, 0.1, method=method)
    col = M.copy()
    col[:, [1, 3]] = np.inf
    with pytest.raises(ValueError, match=r"infeasible problem: column 1 of `M` \(and 1 more\)"):
        sinkhorn(a, b, col, 0.1, method=method)
    b0 = b.copy()
    b0[4] = 0.0
    b0 /= b0.sum()
    only_to_empty = M.copy()
    only_to_empty[0, :4] = np.inf  # row 0 reaches column 4 only, which has no mass
    with pytest.raises(ValueError, match="infeasible problem: row 0"):
        sinkhorn(a, b0, only_to_empty, 0.1, method=method)
    with pytest.raises(ValueError, match="`M` contains -inf"):
        sinkhorn(a, b, np.where(np.isinf(row), -np.inf, row), 0.1, method=method)
