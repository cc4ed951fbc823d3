"""Incoherence trimming, the paper's sample-splitting mode and ``ConvergenceWarning`` of ``complete``.

Oracles: NumPy row norms for the trimming, a dense float64 ``numpy.linalg.lstsq`` ridge solve per row for each
half-step of the paper mode, relative Frobenius error against the planted low-rank matrix for recovery."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import precond.completion._complete as cmod
from precond.completion import SOLVERS, ConvergenceWarning, MatrixCompletion, complete, split_observations
from precond.completion._init import trim_rows
from tests.completion.conftest import low_rank, n_samples, sample


def _rel_err(res, M: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    P = res.U.double().numpy() @ res.V.double().numpy().T
    return float(np.linalg.norm(P - M) / np.linalg.norm(M))


# --- trimming ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trim", [0.5, 1.0, 2.0])
def test_trim_rows_bounds_the_row_norms_and_keeps_the_light_rows(trim: float) -> None:
    rng = np.random.default_rng(0)
    F = rng.standard_normal((50, 4))
    F[[3, 17]] *= 40.0  # heavy (coherent) rows
    bound = trim * np.sqrt(np.mean(np.sum(F**2, 1)))
    out = trim_rows(torch.from_numpy(F), trim).numpy()
    norms, new = np.linalg.norm(F, axis=1), np.linalg.norm(out, axis=1)
    heavy = norms > bound
    assert heavy[[3, 17]].all()
    np.testing.assert_allclose(new[heavy], bound, rtol=1e-12)
    np.testing.assert_array_equal(out[~heavy], F[~heavy])
    np.testing.assert_allclose(out[heavy] / new[heavy, None], F[heavy] / norms[heavy, None], rtol=1e-12)  # direction
    assert new.max() <= bound * (1 + 1e-12)


def test_complete_trims_the_initial_factor_before_the_first_half_step(monkeypatch: pytest.MonkeyPatch) -> None:
    m, n, k = 30, 25, 2
    M = low_rank(m, n, k, seed=1)
    rows, cols = sample(m, n, 400, seed=1, min_per_line=k)
    real_init, seen = cmod.spectral_init, {}

    def heavy_init(*args, **kwargs):  # type: ignore[no-untyped-def]
        V = real_init(*args, **kwargs).clone()
        V[5] *= 100.0
        seen["V0"] = V.clone()
        return V

    def spy(idx, design, target, lam, *a, **kw):  # type: ignore[no-untyped-def]
        seen.setdefault("first_design", design.clone())
        return real_ridge(idx, design, target, lam, *a, **kw)

    real_ridge = cmod.solve_rows
    monkeypatch.setattr(cmod, "spectral_init", heavy_init)
    monkeypatch.setattr(cmod, "solve_rows", spy)
    complete(rows, cols, M[rows, cols], (m, n), k, max_iter=1, trim=1.5, warn=False)
    torch.testing.assert_close(seen["first_design"], trim_rows(seen["V0"], 1.5), rtol=0, atol=0)
    norms = seen["first_design"].norm(dim=1)
    assert float(norms.max()) <= 1.5 * float(seen["V0"].norm(dim=1).square().mean().sqrt()) * (1 + 1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("m", "n", "k"), [(80, 60, 2), (120, 100, 5)])
def test_recovery_still_holds_with_trimming(solver: str, m: int, n: int, k: int) -> None:
    M = low_rank(m, n, k, seed=m + k)
    rows, cols = sample(m, n, n_samples(m, n, k, c=3.0), seed=m + k, min_per_line=k)
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, max_iter=300, tol=1e-16, trim=1.0, solver=solver)
    assert _rel_err(res, M) <= 1e-6


def test_bad_trim_is_refused() -> None:
    with pytest.raises(ValueError, match="`trim` must be > 0"):
        complete([0, 1], [1, 0], [1.0, 2.0], (2, 2), 1, trim=0.0)
    with pytest.raises(TypeError, match="`trim` must be a real number"):
        complete([0, 1], [1, 0], [1.0, 2.0], (2, 2), 1, trim="2")


# --- sample splitting (the paper's mode) ---------------------------------------------------------------------


def test_split_observations_is_a_seeded_partition() -> None:
    parts = split_observations(103, 7, seed=5)
    assert len(parts) == 7 and {p.numel() for p in parts} <= {14, 15}
    np.testing.assert_array_equal(np.sort(torch.cat(parts).numpy()), np.arange(103))
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(torch.cat(parts).numpy(), perm.numpy())


def _lstsq_ridge(index: np.ndarray, other: np.ndarray, t: np.ndarray, W: np.ndarray, size: int, lam: np.ndarray):  # type: ignore[no-untyped-def]
    out = np.zeros((size, W.shape[1]))
    for i in range(size):
        sel = index == i
        if not sel.any():
            continue
        A = np.vstack([W[other[sel]], np.sqrt(lam[i]) * np.eye(W.shape[1])])
        out[i] = np.linalg.lstsq(A, np.concatenate([t[sel], np.zeros(W.shape[1])]), rcond=None)[0]
    return out


@pytest.mark.parametrize("reg_scaling", ["none", "count"])
def test_each_half_step_uses_only_its_part(monkeypatch: pytest.MonkeyPatch, reg_scaling: str) -> None:
    m, n, k, T, reg, seed = 12, 10, 2, 3, 0.2, 3
    rng = np.random.default_rng(0)
    M = low_rank(m, n, k, seed=2) + 0.1 * rng.standard_normal((m, n))
    rows, cols = np.nonzero(np.ones((m, n)))
    vals = M[rows, cols]
    parts = [p.numpy() for p in split_observations(rows.size, 2 * T + 1, seed)]
    calls, inits = [], []
    real_ridge, real_init = cmod.solve_rows, cmod.spectral_init

    def spy(idx, design, target, lam, *a, **kw):  # type: ignore[no-untyped-def]
        out = real_ridge(idx, design, target, lam, *a, **kw)
        calls.append((idx.n_rows, design.clone(), out[0].clone()))
        return out

    def init_spy(r, c, t, *a, **kw):  # type: ignore[no-untyped-def]
        inits.append((r.numpy().copy(), c.numpy().copy(), t.numpy().copy()))
        return real_init(r, c, t, *a, **kw)

    monkeypatch.setattr(cmod, "solve_rows", spy)
    monkeypatch.setattr(cmod, "spectral_init", init_spy)
    res = complete(
        rows, cols, vals, (m, n), k, reg=reg, max_iter=T, tol=0.0, sample_splitting=True, seed=seed,
        reg_scaling=reg_scaling, warn=False,
    )  # fmt: skip
    assert res.iterations == T and len(calls) == 2 * T
    ((r0, c0, t0),) = inits
    np.testing.assert_array_equal(r0, rows[parts[0]])
    np.testing.assert_array_equal(c0, cols[parts[0]])
    np.testing.assert_array_equal(t0, vals[parts[0]])
    for step, (size, design, out) in enumerate(calls):
        t = step // 2 + 1
        rowside = step % 2 == 0
        part = parts[t] if rowside else parts[T + t]
        index, other = (rows[part], cols[part]) if rowside else (cols[part], rows[part])
        counts = np.bincount(index, minlength=size).astype(float)
        lam = reg * counts if reg_scaling == "count" else np.full(size, reg)
        oracle = _lstsq_ridge(index, other, vals[part], design.numpy(), size, lam)
        np.testing.assert_allclose(out.numpy(), oracle, rtol=1e-10, atol=1e-12)
        if step > 0:  # each half-step's design is the previous half-step's output
            torch.testing.assert_close(design, calls[step - 1][2], rtol=0, atol=0)
    np.testing.assert_allclose(res.V.numpy(), calls[-1][2], rtol=0, atol=0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_paper_mode_recovers_with_enough_samples(solver: str) -> None:
    m = n = 300
    k, T = 2, 8
    M = low_rank(m, n, k, seed=1)
    rows, cols = sample(m, n, int(0.8 * m * n), seed=1)
    res = complete(
        rows, cols, M[rows, cols], (m, n), k, reg=0.0, max_iter=T, tol=0.0, sample_splitting=True, solver=solver,
        warn=False,
    )  # fmt: skip
    assert res.iterations == T
    assert _rel_err(res, M) <= 1e-3
    # the error contracts across the half-steps: far below the spectral start
    start = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, max_iter=1, sample_splitting=True, warn=False)
    assert _rel_err(res, M) <= 0.05 * _rel_err(start, M)


def test_paper_mode_bad_input() -> None:
    with pytest.raises(ValueError, match="`sample_splitting=True` is the paper's model without biases"):
        complete([0, 1, 2], [1, 0, 2], [1.0, 2.0, 3.0], (3, 3), 1, biases=True, sample_splitting=True)
    with pytest.raises(ValueError, match=r"2·max_iter\+1 = 7 parts; lower `max_iter`"):
        complete([0, 1, 2], [1, 0, 2], [1.0, 2.0, 3.0], (3, 3), 1, max_iter=3, sample_splitting=True)
    with pytest.raises(TypeError, match="`sample_splitting` must be True or False"):
        complete([0, 1], [1, 0], [1.0, 2.0], (2, 2), 1, sample_splitting=1)
    with pytest.raises(TypeError, match="`warn` must be True or False"):
        complete([0, 1], [1, 0], [1.0, 2.0], (2, 2), 1, warn="no")


# --- ConvergenceWarning --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    m, n, k = 40, 30, 3
    M = low_rank(m, n, k, seed=8)
    rows, cols = sample(m, n, n_samples(m, n, k, c=3.0), seed=8, min_per_line=k)
    return rows, cols, M[rows, cols], (m, n)


@pytest.mark.parametrize("sample_splitting", [False, True])
@pytest.mark.parametrize("solver", SOLVERS)
def test_convergence_warning_when_max_iter_is_hit(problem, solver: str, sample_splitting: bool) -> None:  # type: ignore[no-untyped-def]
    rows, cols, vals, shape = problem
    assert issubclass(ConvergenceWarning, UserWarning)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        res = complete(
            rows, cols, vals, shape, 3, max_iter=2, tol=0.0, solver=solver, sample_splitting=sample_splitting
        )
    assert not res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        quiet = complete(rows, cols, vals, shape, 3, max_iter=2, tol=0.0, solver=solver, warn=False)
        assert not quiet.converged
        done = complete(rows, cols, vals, shape, 3, max_iter=500, tol=1e-8, solver=solver)
        assert done.converged
    with pytest.warns(ConvergenceWarning):
        MatrixCompletion(rank=3, max_iter=2, tol=0.0, solver=solver, shape=shape).fit((rows, cols, vals))
