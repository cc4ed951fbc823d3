"""Exact recovery, noise proportionality and float32 (oracle: the known ground-truth matrix)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from precond.completion import complete
from tests.completion.conftest import low_rank, n_samples, sample


def _rel_error(res, M: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    X = (res.U @ res.V.T).double().numpy()
    return float(np.linalg.norm(X - M) / np.linalg.norm(M))


@pytest.mark.parametrize(("m", "n"), [(150, 120), (200, 300), (400, 100)])
@pytest.mark.parametrize("k", [2, 8])
def test_exact_recovery_from_n_k_log_n_samples(m: int, n: int, k: int) -> None:
    M = low_rank(m, n, k, seed=m + n + k)
    rows, cols = sample(m, n, n_samples(m, n, k), seed=k, min_per_line=k)
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, tol=1e-12, max_iter=500)
    assert res.converged
    assert res.solver == "auto"
    assert all(s.cg_iterations == 0 for s in res.solves)  # the cost model keeps these small rows exact
    assert _rel_error(res, M) <= 1e-6
    assert res.history[-1][1] <= 1e-8
    assert [h[0] for h in res.history] == list(range(1, res.iterations + 1))


def test_objective_never_increases() -> None:
    m, n, k = 150, 120, 8
    M = low_rank(m, n, k, seed=3) + 0.1 * np.random.default_rng(3).standard_normal((m, n))
    rows, cols = sample(m, n, n_samples(m, n, k), seed=3, min_per_line=k)
    objectives = []
    for it in range(1, 8):
        res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.5, tol=0.0, max_iter=it, biases=True)
        objectives.append(res.objective)
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(objectives))


def test_noise_gives_error_proportional_to_noise() -> None:
    m, n, k = 200, 150, 4
    M = low_rank(m, n, k, seed=7)
    rows, cols = sample(m, n, n_samples(m, n, k, c=2.0), seed=7, min_per_line=k)
    held = np.ones((m, n), dtype=bool)
    held[rows, cols] = False
    noise = np.random.default_rng(8).standard_normal(rows.size)
    errors = []
    for sigma in (1e-3, 1e-2):
        res = complete(rows, cols, M[rows, cols] + sigma * noise, (m, n), k, reg=0.0, tol=1e-10, max_iter=300)
        X = (res.U @ res.V.T).numpy()
        rmse = float(np.sqrt(np.mean((X - M)[held] ** 2)))
        assert rmse <= 3 * sigma  # at most a few times the noise level (it is averaged over many samples)
        errors.append(rmse)
    assert 8.0 <= errors[1] / errors[0] <= 12.0  # linear in the noise level


def test_validation_rmse_is_recorded_and_matches_predict() -> None:
    m, n, k = 150, 120, 2
    M = low_rank(m, n, k, seed=11)
    rows, cols = sample(m, n, n_samples(m, n, k, c=2.0), seed=11, min_per_line=k)
    vr, vc = np.nonzero(np.ones((m, n)))
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.1, validation=(vr, vc, M[vr, vc]), max_iter=5)
    assert all(h[2] is not None for h in res.history)
    pred = res.predict(vr, vc)
    assert res.history[-1][2] == pytest.approx(float(np.sqrt(np.mean((pred - M[vr, vc]) ** 2))), rel=1e-10)
    assert all(h[3] >= 0 for h in res.history)


@pytest.mark.parametrize("biases", [False, True])
def test_float32_runs_and_stays_finite(biases: bool) -> None:
    m, n, k = 200, 150, 8
    M = low_rank(m, n, k, seed=5) * 3.0 + (2.5 if biases else 0.0)
    rows, cols = sample(m, n, n_samples(m, n, k), seed=5, min_per_line=k)
    values = torch.as_tensor(M[rows, cols], dtype=torch.float32)
    res = complete(rows, cols, values, (m, n), k, reg=1e-3, max_iter=200, tol=1e-4, biases=biases)
    assert res.converged
    assert res.U.dtype == res.V.dtype == torch.float32
    assert torch.isfinite(res.U).all() and torch.isfinite(res.V).all()
    full = res.predict(*np.nonzero(np.ones((m, n)))).astype(np.float64).reshape(m, n)
    assert np.linalg.norm(full - M) / np.linalg.norm(M) <= 1e-3
    if biases:
        assert res.row_bias is not None and res.row_bias.dtype == torch.float32
        assert torch.isfinite(res.row_bias).all()


def test_dtype_argument_and_torch_inputs() -> None:
    m, n, k = 60, 50, 2
    M = low_rank(m, n, k, seed=2)
    rows, cols = sample(m, n, 1500, seed=2, min_per_line=k)
    a = complete(rows, cols, M[rows, cols], (m, n), k, dtype=torch.float32, max_iter=3)
    b = complete(torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(M[rows, cols]), (m, n), k, max_iter=3)
    c = complete(rows.tolist(), cols.tolist(), M[rows, cols].tolist(), (m, n), k, max_iter=3)
    assert a.U.dtype == torch.float32 and b.U.dtype == torch.float64
    torch.testing.assert_close(b.U, c.U, rtol=0, atol=0)
    torch.testing.assert_close(a.U.double(), b.U, rtol=1e-3, atol=1e-3)


def test_predict_returns_the_index_type_it_was_given() -> None:
    """NumPy (or list) indices give a NumPy array, torch indices a tensor on the factors' device; same values."""
    m, n, k = 40, 30, 2
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(m, k)) @ rng.normal(size=(k, n))
    rows, cols = np.nonzero(rng.random((m, n)) < 0.5)
    res = complete(rows, cols, truth[rows, cols], (m, n), k, reg=1e-8)
    as_numpy = res.predict(rows[:5], cols[:5])
    as_list = res.predict(rows[:5].tolist(), cols[:5].tolist())
    as_torch = res.predict(torch.as_tensor(rows[:5]), torch.as_tensor(cols[:5]))
    assert isinstance(as_numpy, np.ndarray) and isinstance(as_list, np.ndarray)
    assert isinstance(as_torch, torch.Tensor) and as_torch.device == res.U.device
    np.testing.assert_array_equal(as_numpy, as_torch.numpy())
    np.testing.assert_allclose(as_numpy, truth[rows[:5], cols[:5]], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("m", "n", "k"), [(300, 250, 16), (400, 350, 32)])
def test_exact_recovery_at_larger_rank_with_every_solver(m: int, n: int, k: int) -> None:
    """``k`` up to 32 (the issue's range), the exact and the approximate solvers reach the same ≤ 1e-6 error."""
    M = low_rank(m, n, k, seed=m + k)
    rows, cols = sample(m, n, n_samples(m, n, k, c=1.2), seed=k, min_per_line=k)
    for solver in ("exact", "cg", "sketch_cg"):
        res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, tol=1e-13, max_iter=600, solver=solver)
        assert res.converged, solver
        assert _rel_error(res, M) <= 1e-6, solver
