"""precond.ot.sinkhorn (log-domain and SNS) against POT as an independent oracle, plus bad-input checks."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch

from precond.ot import ConvergenceWarning, OTResult, dist, sinkhorn, sinkhorn2, unif


def _clouds(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 1.0
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    M = ot.dist(x, y)
    return a / a.sum(), b / b.sum(), M / M.max()


def _random_assignment(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, n))


def _errors(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


@pytest.mark.parametrize("method", ["sinkhorn", "sinkhorn_log", "sns"])
def test_matches_pot_sinkhorn_log(method: str) -> None:
    a, b, M = _clouds(60, 50)
    reg = 0.02
    G, log = ot.bregman.sinkhorn_log(a, b, M, reg, numItermax=100_000, stopThr=1e-14, log=True)
    res = sinkhorn(a, b, M, reg, method=method, tol=1e-12)
    assert res.converged and res.marginal_error <= 1e-12
    np.testing.assert_allclose(res.plan.numpy(), G, atol=1e-12, rtol=1e-8)
    # Potentials in POT's log convention, up to the gauge (f + c, g − c).
    f_pot, g_pot = reg * log["log_u"], reg * log["log_v"]
    c = float(np.mean(res.f.numpy() - f_pot))
    np.testing.assert_allclose(res.f.numpy() - c, f_pot, atol=1e-9)
    np.testing.assert_allclose(res.g.numpy() + c, g_pot, atol=1e-9)
    assert res.cost == pytest.approx(float(ot.sinkhorn2(a, b, M, reg, method="sinkhorn_log", stopThr=1e-14)), rel=1e-9)


def test_matches_pot_sinkhorn_knopp_and_sinkhorn2() -> None:
    a, b, M = _clouds(40, 40, seed=1)
    G = ot.sinkhorn(a, b, M, 0.1, stopThr=1e-14, numItermax=100_000)
    res = sinkhorn(a, b, M, 0.1, tol=1e-12)
    np.testing.assert_allclose(res.plan.numpy(), G, atol=1e-12)
    assert sinkhorn2(a, b, M, 0.1, method="sns", tol=1e-12) == pytest.approx(float((G * M).sum()), rel=1e-10)


def test_sns_equals_log_sinkhorn_with_far_fewer_iterations() -> None:
    M = _random_assignment(100)
    reg = 5e-3
    log_res = sinkhorn(None, None, M, reg, tol=1e-10, max_iter=50_000)
    sns_res = sinkhorn(None, None, M, reg, method="sns", tol=1e-10)
    assert log_res.converged and sns_res.converged
    assert sns_res.newton_iterations > 0
    assert sns_res.iterations == sns_res.sinkhorn_iterations + sns_res.newton_iterations
    torch.testing.assert_close(sns_res.plan, log_res.plan, atol=1e-8, rtol=0)
    # Measured: 1494 log-Sinkhorn iterations vs 30 (20 Sinkhorn + 10 Newton) for SNS on this seed.
    assert log_res.iterations >= 10 * sns_res.iterations
    phases = {p for *_, p in sns_res.history}
    assert phases == {"sinkhorn", "newton"}
    assert sns_res.history[-1][1] <= 1e-10


def test_cost_approaches_emd_as_reg_vanishes() -> None:
    a, b, M = _clouds(50, 50, seed=2)
    exact = float(ot.emd2(a, b, M, numItermax=10**7))
    gaps = [sinkhorn(a, b, M, reg, method="sns", tol=1e-10).cost - exact for reg in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert all(g >= -1e-9 for g in gaps)  # the entropic plan is feasible, so it cannot beat the LP
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-4 * max(exact, 1e-12) + 1e-6


@pytest.mark.parametrize("max_iter", [3, 1000])
def test_dual_gradient_is_the_marginal_error(max_iter: int) -> None:
    a, b, M = _clouds(30, 25, seed=3)
    reg = 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = sinkhorn(a, b, M, reg, tol=1e-12, max_iter=max_iter)
    f = res.f.clone().requires_grad_(True)
    g = res.g.clone().requires_grad_(True)
    at, bt, mt = (torch.as_tensor(t) for t in (a, b, M))
    plan = torch.exp((f[:, None] + g[None, :] - mt) / reg)
    dual = (at * f).sum() + (bt * g).sum() - reg * plan.sum()
    gf, gg = torch.autograd.grad(dual, (f, g))
    torch.testing.assert_close(gf, at - res.plan.sum(1))
    torch.testing.assert_close(gg, bt - res.plan.sum(0))
    assert float(gf.abs().sum() + gg.abs().sum()) == pytest.approx(res.marginal_error, rel=1e-6, abs=1e-15)
    if res.converged:
        # Zero duality gap: ⟨P, M⟩ + reg Σ P log P = ⟨a, f⟩ + ⟨b, g⟩ at the optimum.
        primal = res.cost + reg * float((res.plan * res.plan.log()).sum())
        assert primal == pytest.approx(float((at * res.f).sum() + (bt * res.g).sum()), abs=1e-10)


def test_log_domain_is_stable_where_pot_sinkhorn_underflows() -> None:
    n = 80
    x = np.linspace(0, 1, n)
    a = ot.datasets.make_1D_gauss(n, m=20, s=5)
    b = ot.datasets.make_1D_gauss(n, m=60, s=8)
    M = ot.dist(x[:, None], x[:, None])
    M /= M.max()
    reg = 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G = ot.sinkhorn(a, b, M, reg)  # the control: exp(-M/reg) underflows
    assert not np.isfinite(G).all() or _errors(G, a, b) > 1e-2
    for method in ("sinkhorn", "sinkhorn_log", "sns"):
        res = sinkhorn(a, b, M, reg, method=method, tol=1e-9, max_iter=20_000)
        assert torch.isfinite(res.plan).all() and torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
        assert res.converged, (method, res.marginal_error)
    assert res.cost == pytest.approx(float(ot.emd2(a, b, M)), rel=1e-2, abs=1e-4)


def test_max_iter_reports_and_warns() -> None:
    M = _random_assignment(50)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = sinkhorn(None, None, M, 1e-3, max_iter=5)
    assert not res.converged and res.iterations == 5 and res.marginal_error > 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(None, None, M, 1e-3, max_iter=5, warn=False)
    with pytest.warns(ConvergenceWarning):
        res = sinkhorn(None, None, M, 1e-3, method="sns", max_iter=5)
    assert not res.converged


def test_float32_and_numpy_inputs() -> None:
    a, b, M = _clouds(40, 30, seed=4)
    ref = sinkhorn(a, b, M, 0.05, tol=1e-12)
    assert isinstance(ref, OTResult) and ref.plan.dtype == torch.float64 and isinstance(ref.plan, torch.Tensor)
    from_torch = sinkhorn(torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(M), 0.05, tol=1e-12)
    torch.testing.assert_close(from_torch.plan, ref.plan)
    for method in ("sinkhorn", "sinkhorn_log", "sns"):
        res32 = sinkhorn(
            a.astype(np.float32), b.astype(np.float32), M.astype(np.float32), 0.05, method=method, tol=1e-5
        )
        assert res32.converged and res32.plan.dtype == torch.float32
        torch.testing.assert_close(res32.plan.double(), ref.plan, atol=1e-6, rtol=0)
    res = sinkhorn(a, b, M, 0.05, dtype=torch.float32, tol=1e-5)
    assert res.plan.dtype == torch.float32


def test_uniform_default_zero_mass_and_options() -> None:
    a, b, M = _clouds(30, 30, seed=5)
    res = sinkhorn(None, [], M, 0.05, tol=1e-11)
    np.testing.assert_allclose(res.plan.sum(1).numpy(), unif(30).numpy(), atol=1e-11)
    a0 = a.copy()
    a0[[3, 7]] = 0
    a0 /= a0.sum()
    res = sinkhorn(a0, b, M, 0.05, method="sns", tol=1e-11)
    assert res.converged and float(res.plan[[3, 7]].abs().max()) == 0.0 and torch.isinf(res.f[[3, 7]]).all()
    with np.errstate(divide="ignore"):  # POT takes log(0) on the zero-mass rows
        G = ot.bregman.sinkhorn_log(a0, b, M, 0.05, stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(res.plan.numpy(), G, atol=1e-11)
    scaled = sinkhorn(a, b, M, 1e-3, method="sinkhorn_log", epsilon_scaling=True, tol=1e-10, max_iter=100_000)
    plain = sinkhorn(a, b, M, 1e-3, method="sns", tol=1e-10, sparse_plan=True, n1=20)
    assert scaled.converged and plain.converged
    torch.testing.assert_close(scaled.plan, plain.plan, atol=1e-9, rtol=0)
    assert plain.plan_sparse is not None and plain.plan_sparse.is_sparse
    torch.testing.assert_close(plain.plan_sparse.to_dense(), plain.plan, atol=1e-11, rtol=0)


def test_dist_matches_pot() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    for metric in ("sqeuclidean", "euclidean", "cityblock", "chebyshev"):
        np.testing.assert_allclose(dist(x, y, metric=metric).numpy(), ot.dist(x, y, metric=metric), atol=1e-12)
    np.testing.assert_allclose(dist(x, y, "minkowski", p=3).numpy(), ot.dist(x, y, "minkowski", p=3), atol=1e-12)
    assert float(dist(x).diagonal().abs().max()) == 0.0
    with pytest.raises(ValueError, match="metric"):
        dist(x, y, metric="hamming")
    with pytest.raises(ValueError, match="dimension"):
        dist(x, y[:, :2])


BAD = [
    ({"a": [0.5, 0.6]}, "same total mass"),
    ({"a": [1.5, -0.5]}, "`a` has negative"),
    ({"b": [0.5, np.nan]}, "`b` contains NaN"),
    ({"M": [[0.0, -np.inf], [1.0, 0.0]]}, "`M` contains -inf"),
    ({"M": [[0.0, np.nan], [1.0, 0.0]]}, "`M` contains NaN"),
    ({"M": [[np.inf, np.inf], [1.0, 0.0]]}, "infeasible problem: row 0"),
    ({"M": [[np.inf, 1.0], [np.inf, 0.0]]}, "infeasible problem: column 0"),
    ({"a": [1 / 3] * 3}, "`a` must have shape"),
    ({"b": [1.0]}, "`b` must have shape"),
    ({"M": [0.0, 1.0]}, "`M` must be a 2-D"),
    ({"reg": 0.0}, "`reg`"),
    ({"reg": -1.0}, "`reg`"),
    ({"reg": float("nan")}, "`reg`"),
    ({"method": "greenkhorn"}, "`method`"),
    ({"tol": 0.0}, "`tol`"),
    ({"max_iter": -1}, "`max_iter`"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_input_raises_value_error(change: dict, message: str) -> None:
    args = {"a": [0.5, 0.5], "b": [0.5, 0.5], "M": [[0.0, 1.0], [1.0, 0.0]], "reg": 0.1} | change
    with pytest.raises(ValueError, match=message):
        sinkhorn(**args)
