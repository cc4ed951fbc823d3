"""precond.ot.pot against POT itself (``import ot``): same signature, same plans, arrays in and out."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch

from precond.ot import METHODS, ConvergenceWarning, pot, sinkhorn, sinkhorn2
from precond.ot._batched import batched_sinkhorn, check_batched
from precond.ot._loss import solve_values

#: POT's log keys per method (ot.bregman), all of which precond's log carries.
POT_LOG_KEYS = {
    "sinkhorn": {"err", "niter", "u", "v"},
    "sinkhorn_log": {"err", "niter", "u", "v", "log_u", "log_v"},
    "sinkhorn_stabilized": {"err", "n_iter", "logu", "logv", "alpha", "beta", "warmstart"},
    "sinkhorn_epsilon_scaling": {"err", "niter", "alpha", "beta", "warmstart"},
    "greenkhorn": {"u", "v"},
}
POT_NAMES = sorted(POT_LOG_KEYS)


def _problem(n: int = 30, m: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(m, 2)))
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M / M.max()


def _l1(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


@pytest.mark.parametrize("method", POT_NAMES)
def test_every_pot_method_matches_pot(method: str) -> None:
    a, b, M = _problem()
    reg = 0.05
    kw = {"numItermax": 100_000, "stopThr": 1e-13, "log": True}
    G, log_pot = ot.sinkhorn(a, b, M, reg, method=method, **kw)
    P, log = pot.sinkhorn(a, b, M, reg, method=method, **kw)
    assert type(P) is np.ndarray and P.dtype == np.float64 and P.shape == (30, 20)
    np.testing.assert_allclose(P, G, atol=1e-8)
    assert P.sum(0) == pytest.approx(b, abs=1e-12)  # POT code keeps working on the result
    assert POT_LOG_KEYS[method] <= set(log) and set(log_pot) <= set(log)
    np.testing.assert_allclose(np.outer(log["u"], log["v"]) * np.exp(-M / reg), P, atol=1e-12)
    np.testing.assert_allclose(log["alpha"], reg * log["log_u"]), np.testing.assert_allclose(log["logv"], log["log_v"])
    value = pot.sinkhorn2(a, b, M, reg, method=method, numItermax=100_000, stopThr=1e-13)
    assert isinstance(value, np.float64) and float(value) == pytest.approx(float((G * M).sum()), rel=1e-8)


def test_potentials_equal_pots_up_to_the_gauge() -> None:
    a, b, M = _problem()
    reg = 0.05
    _, lp = ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", numItermax=100_000, stopThr=1e-14, log=True)
    _, lq = pot.sinkhorn(a, b, M, reg, method="sinkhorn_log", stopThr=1e-13, log=True)
    c = float(np.mean(lq["log_u"] - lp["log_u"]))
    np.testing.assert_allclose(lq["log_u"] - c, lp["log_u"], atol=1e-8)
    np.testing.assert_allclose(lq["log_v"] + c, lp["log_v"], atol=1e-8)


def test_pot_docstring_example_with_lists() -> None:
    P = pot.sinkhorn([0.5, 0.5], [0.5, 0.5], [[0.0, 1.0], [1.0, 0.0]], 1)
    assert type(P) is np.ndarray and P.dtype == np.float64
    np.testing.assert_allclose(P, [[0.36552929, 0.13447071], [0.13447071, 0.36552929]], atol=1e-8)
    assert float(pot.sinkhorn2([0.5, 0.5], [0.5, 0.5], [[0.0, 1.0], [1.0, 0.0]], 1)) == pytest.approx(
        0.26894142136999516, rel=1e-9
    )


def test_array_type_in_is_array_type_out() -> None:
    a, b, M = _problem()
    P32 = pot.sinkhorn(a.astype(np.float32), b.astype(np.float32), M.astype(np.float32), 0.1, stopThr=1e-5)
    assert type(P32) is np.ndarray and P32.dtype == np.float32
    assert isinstance(pot.sinkhorn2(a, b, M.astype(np.float32), 0.1, stopThr=1e-5), np.float32)
    for dt in (torch.float64, torch.float32):
        ta, tb, tm = (torch.tensor(x, dtype=dt) for x in (a, b, M))
        P, log = pot.sinkhorn(ta, tb, tm, 0.1, stopThr=1e-5, log=True)
        assert isinstance(P, torch.Tensor) and P.dtype == dt and P.device == tm.device
        assert isinstance(log["log_u"], torch.Tensor) and log["log_u"].dtype == dt
        value = pot.sinkhorn2(ta, tb, tm, 0.1, stopThr=1e-5)
        assert isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype == dt


def test_num_iter_max_and_stop_thr_are_honoured() -> None:
    a, b, M = _problem()
    with pytest.warns(UserWarning, match="did not converge"):
        P, log = pot.sinkhorn(a, b, M, 0.01, numItermax=5, log=True)
    assert log["niter"] == 5 and _l1(P, a, b) > 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pot.sinkhorn2(a, b, M, 0.01, numItermax=5)  # POT's sinkhorn2 does not warn by default
        pot.sinkhorn(a, b, M, 0.01, numItermax=5, warn=False)
    for thr in (1e-3, 1e-6, 1e-11):
        P, log = pot.sinkhorn(a, b, M, 0.01, numItermax=100_000, stopThr=thr, log=True)
        assert _l1(P, a, b) <= thr * 1.01
        assert np.linalg.norm(P.sum(0) - b) < thr  # POT's criterion, implied
    loose = pot.sinkhorn(a, b, M, 0.01, stopThr=1e-3, log=True)[1]["niter"]
    tight = pot.sinkhorn(a, b, M, 0.01, stopThr=1e-11, numItermax=100_000, log=True)[1]["niter"]
    assert loose < tight


def test_bad_arguments_name_the_argument() -> None:
    a, b, M = _problem()
    with pytest.raises(ValueError, match=r"`method` must be one of .*sinkhorn_stabilized"):
        pot.sinkhorn(a, b, M, 0.1, method="sinkhorn_fast")
    with pytest.raises(ValueError, match="`warmstart`"):
        pot.sinkhorn(a, b, M, 0.1, warmstart=(np.zeros(30), np.zeros(20)))
    with pytest.raises(ValueError, match="`numItermax`"):
        pot.sinkhorn(a, b, M, 0.1, numItermax=1.5)
    with pytest.raises(ValueError, match="`stopThr`"):
        pot.sinkhorn(a, b, M, 0.1, stopThr=0)
    with pytest.raises(TypeError):
        pot.sinkhorn(a, b, M, 0.1, no_such_option=1)


def test_plan_of_grad_inputs_warns_that_it_is_detached() -> None:
    a, b, M = _problem(6, 5)
    with pytest.warns(UserWarning, match="detached"):
        P = pot.sinkhorn(a, b, torch.tensor(M, requires_grad=True), 0.1)
    assert not P.requires_grad


def test_sns_and_precond_options_pass_through() -> None:
    a, b, M = _problem()
    G = ot.sinkhorn(a, b, M, 0.02, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    np.testing.assert_allclose(pot.sinkhorn(a, b, M, 0.02, method="sns", stopThr=1e-12, keep=3.0), G, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_result_behaves_as_its_plan_for_numpy(method: str) -> None:
    a, b, M = _problem()
    res = sinkhorn(a, b, M, 0.05, method=method, tol=1e-10)
    np.testing.assert_array_equal(np.asarray(res), res.plan.numpy())
    np.testing.assert_allclose(np.sum(res, 0), b, atol=1e-10)
    assert np.asarray(res, dtype=np.float32).dtype == np.float32


# Several target histograms: b of shape [m, k].


def _targets(b: np.ndarray) -> np.ndarray:
    return np.stack([b, b[::-1], np.full_like(b, 1.0 / b.size)], 1)


@pytest.mark.parametrize("method", ["sinkhorn", "sinkhorn_log", "sinkhorn_stabilized"])
def test_multi_column_b_matches_pot_and_single_solves(method: str) -> None:
    a, b, M = _problem()
    B = _targets(b)
    reg = 0.05
    expected = ot.sinkhorn2(a, B, M, reg, method=method, numItermax=100_000, stopThr=1e-14)
    singles = [sinkhorn2(a, B[:, k], M, reg, tol=1e-13) for k in range(3)]
    for fn in (pot.sinkhorn2, pot.sinkhorn):  # POT's sinkhorn also returns the k losses for a matrix b
        values, log = fn(a, B, M, reg, method=method, numItermax=100_000, stopThr=1e-13, log=True)
        assert type(values) is np.ndarray and values.shape == (3,)
        np.testing.assert_allclose(values, expected, rtol=1e-9)
        np.testing.assert_allclose(values, singles, rtol=1e-10)
        assert log["u"].shape == (30, 3) and log["v"].shape == (20, 3)
    np.testing.assert_allclose(sinkhorn2(a, B, M, reg, tol=1e-13), singles, rtol=1e-10)
    torch_values = pot.sinkhorn2(torch.tensor(a), torch.tensor(B), torch.tensor(M), reg, stopThr=1e-13)
    assert isinstance(torch_values, torch.Tensor) and torch_values.shape == (3,)
    np.testing.assert_allclose(torch_values.numpy(), singles, rtol=1e-10)


def test_one_column_b_returns_one_loss_as_pot() -> None:
    a, b, M = _problem()
    values = pot.sinkhorn2(a, b[:, None], M, 0.05, stopThr=1e-13)
    assert values.shape == (1,)
    assert values == pytest.approx(ot.sinkhorn2(a, b[:, None], M, 0.05, stopThr=1e-14, numItermax=100_000), rel=1e-9)


def test_multi_column_b_with_inf_costs() -> None:
    """Forbidden pairs: the kernel entry is exactly 0; a huge finite cost (kernel underflows to 0) is the oracle."""
    a, b, M = _problem()
    B = _targets(b)
    M_inf = M.copy()
    M_inf[0, :5] = np.inf
    M_inf[7, 3] = np.inf
    M_big = np.where(np.isinf(M_inf), 1e4, M_inf)
    oracle = ot.sinkhorn2(a, B, M_big, 0.05, method="sinkhorn_log", numItermax=100_000, stopThr=1e-14)
    values = pot.sinkhorn2(a, B, M_inf, 0.05, stopThr=1e-13)
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, oracle, rtol=1e-9)
    M_bad = M_inf.copy()
    M_bad[4] = np.inf
    with pytest.raises(ValueError, match="infeasible problem: row 4 of `M`"):
        pot.sinkhorn2(a, B, M_bad, 0.05)


def test_multi_column_b_falls_back_per_histogram_when_potentials_spread() -> None:
    """At small reg the histograms' potentials differ by far more than one shared kernel holds."""
    a, _, M = _problem(25, 25, seed=3)
    B = np.zeros((25, 2))
    B[:5, 0], B[-5:, 1] = 0.2, 0.2
    B += 1e-3
    B /= B.sum(0)
    reg = 2e-3
    a_t, b_t, m_t, reg = check_batched(a, B, M, reg)
    out = batched_sinkhorn(a_t, b_t, m_t, reg, tol=1e-10, max_iter=100_000)
    assert out.fallback and out.converged
    singles = [sinkhorn2(a, B[:, k], M, reg, tol=1e-10) for k in range(2)]
    np.testing.assert_allclose(out.costs.numpy(), singles, rtol=1e-9)
    easy = batched_sinkhorn(*check_batched(a, B, M, 0.1)[:3], 0.1, tol=1e-10, max_iter=100_000)
    assert not easy.fallback and easy.converged


def test_multi_column_b_bad_input() -> None:
    a, b, M = _problem()
    B = _targets(b)
    with pytest.raises(ValueError, match=r"`b\[:, 1\]` must have the same total mass"):
        pot.sinkhorn2(a, B * np.array([1.0, 2.0, 1.0]), M, 0.05)
    with pytest.raises(ValueError, match=r"`b` must have shape \(20, k\)"):
        pot.sinkhorn2(a, B[:-1], M, 0.05)
    with pytest.raises(ValueError, match="negative"):
        pot.sinkhorn2(a, B - 0.1, M, 0.05)
    with pytest.raises(ValueError, match="not supported with several target histograms"):
        sinkhorn2(a, B, M, 0.05, epsilon_scaling=True)
    with pytest.warns(ConvergenceWarning, match="3 histograms"):
        sinkhorn2(a, B, M, 0.01, max_iter=3)


def test_multi_column_b_with_epsilon_scaling_name() -> None:
    a, b, M = _problem()
    B = _targets(b)
    expected = [sinkhorn2(a, B[:, k], M, 0.05, tol=1e-13) for k in range(3)]
    values = pot.sinkhorn2(a, B, M, 0.05, method="sinkhorn_epsilon_scaling", stopThr=1e-13)
    np.testing.assert_allclose(values, expected, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multi_column_b_with_a_mass_mismatch_or_float32_converges_quickly(dtype: type) -> None:
    """Issue 11 item 8 for several histograms: a mass mismatch the check lets through (1e-7, float32
    normalization) and float32 inputs with the default tol converge in a few hundred iterations (they spun to
    max_iter before), each column's value equal to its single-histogram solve."""
    a, b, M = _problem()
    B = _targets(b)
    B[:, 1] *= 1 + 3e-7
    a, B, M = a.astype(dtype), B.astype(dtype), M.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        out = solve_values(a, B, M, 0.05)
    assert out.converged and out.iterations < 2000
    singles = [sinkhorn(a, B[:, k], M, 0.05).cost for k in range(B.shape[1])]
    rtol = 1e-7 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out.values.numpy(), singles, rtol=rtol)
