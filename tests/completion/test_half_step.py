"""Each ALS half-step against a dense ridge least-squares solve per row (oracle: ``numpy.linalg.lstsq``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precond.completion import complete
from precond.completion._biases import fit_biases
from precond.completion._init import spectral_init
from precond.completion._solve import RowIndex, ridge_rows


def _dense_ridge(rows: np.ndarray, cols: np.ndarray, t: np.ndarray, W: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Row ``i``: ``lstsq([W[cols of i]; √λ_i I], [t_i; 0])``, one dense problem per row (min-norm if singular)."""
    m, d = lam.size, W.shape[1]
    out = np.zeros((m, d))
    for i in range(m):
        sel = rows == i
        if not sel.any():
            continue
        A = np.vstack([W[cols[sel]], np.sqrt(lam[i]) * np.eye(d)])
        b = np.concatenate([t[sel], np.zeros(d)])
        out[i] = np.linalg.lstsq(A, b, rcond=None)[0]
    return out


def _dense_baseline(
    rows: np.ndarray, cols: np.ndarray, t: np.ndarray, lam_r: np.ndarray, lam_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bias-only ridge model ``t_ij ≈ b_i + c_j`` as one dense ``lstsq`` over all ``m + n`` unknowns."""
    m, n = lam_r.size, lam_c.size
    A = np.zeros((rows.size, m + n))
    A[np.arange(rows.size), rows] = 1
    A[np.arange(rows.size), m + cols] = 1
    A = np.vstack([A, np.diag(np.sqrt(np.concatenate([lam_r, lam_c])))])
    x = np.linalg.lstsq(A, np.concatenate([t, np.zeros(m + n)]), rcond=None)[0]
    return x[:m], x[m:]


def _tiny(seed: int, m: int = 9, n: int = 7, count: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = rng.choice(m * n, size=count, replace=False)
    return flat // n, flat % n, rng.standard_normal(count) * 2 + 1


@pytest.mark.parametrize("lam_kind", ["constant", "count", "zero"])
@pytest.mark.parametrize("budget", [1 << 24, 8])
def test_ridge_rows_equals_dense_lstsq(lam_kind: str, budget: int) -> None:
    rows, cols, t = _tiny(0)
    m, n, d = 9, 7, 3
    rows[:2] = 4  # row 4 well observed, row 8 left empty (cold start)
    rows[rows == 8] = 0
    W = np.random.default_rng(1).standard_normal((n, d))
    counts = np.bincount(rows, minlength=m)
    lam = {"constant": np.full(m, 0.3), "count": 0.3 * counts, "zero": np.zeros(m)}[lam_kind]
    idx = RowIndex(torch.as_tensor(rows), torch.as_tensor(cols), m)
    got = ridge_rows(idx, torch.as_tensor(W), torch.as_tensor(t), torch.as_tensor(lam, dtype=torch.float64), budget)
    expected = _dense_ridge(rows, cols, t, W, lam)
    assert (counts < d).any() and (counts == 0).any()  # the singular (λ = 0) and empty-row paths are exercised
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    assert np.all(got.numpy()[counts == 0] == 0)


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("reg_scaling", ["none", "count"])
def test_first_iteration_is_two_dense_ridge_half_steps(biases: bool, reg_scaling: str) -> None:
    m, n, k, reg = 9, 7, 2, 0.4
    rows, cols, v = _tiny(2, m, n, 40)
    res = complete(rows, cols, v, (m, n), k, reg=reg, max_iter=1, biases=biases, reg_scaling=reg_scaling, seed=5)
    mean = v.mean() if biases else 0.0
    V0 = spectral_init(
        torch.as_tensor(rows),
        torch.as_tensor(cols),
        torch.as_tensor(v - mean),
        (m, n),
        k,
        torch.Generator().manual_seed(5),
    ).numpy()
    scale_r = np.bincount(rows, minlength=m) if reg_scaling == "count" else np.ones(m)
    scale_c = np.bincount(cols, minlength=n) if reg_scaling == "count" else np.ones(n)
    if biases:
        # the warm start of the biases (checked against a dense solve in the next test), then the two half-steps
        b0_t, c0_t = fit_biases(
            torch.as_tensor(rows),
            torch.as_tensor(cols),
            torch.as_tensor(v - mean),
            (torch.as_tensor(np.bincount(rows, minlength=m)), torch.as_tensor(np.bincount(cols, minlength=n))),
            (torch.as_tensor(reg * scale_r, dtype=torch.float64), torch.as_tensor(reg * scale_c, dtype=torch.float64)),
        )
        b0, c0 = b0_t.numpy(), c0_t.numpy()
        V0 = spectral_init(
            torch.as_tensor(rows),
            torch.as_tensor(cols),
            torch.as_tensor(v - mean - b0[rows] - c0[cols]),
            (m, n),
            k,
            torch.Generator().manual_seed(5),
        ).numpy()
        X = _dense_ridge(rows, cols, v - mean - c0[cols], np.hstack([V0, np.ones((n, 1))]), reg * scale_r)
        U, b = X[:, :k], X[:, k]
        Y = _dense_ridge(cols, rows, v - mean - b[rows], np.hstack([U, np.ones((m, 1))]), reg * scale_c)
        V, c = Y[:, :k], Y[:, k]
        assert res.row_bias is not None and res.col_bias is not None and res.mean == pytest.approx(mean, abs=1e-15)
        np.testing.assert_allclose(res.row_bias.numpy(), b, rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.col_bias.numpy(), c, rtol=0, atol=1e-10)
    else:
        U = _dense_ridge(rows, cols, v, V0, reg * scale_r)
        V = _dense_ridge(cols, rows, v, U, reg * scale_c)
        assert res.row_bias is None and res.col_bias is None and res.mean is None
    np.testing.assert_allclose(res.U.numpy(), U, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.V.numpy(), V, rtol=0, atol=1e-10)
    pred = (U[rows] * V[cols]).sum(1) + (mean + b[rows] + c[cols] if biases else 0.0)
    assert res.history[0][1] == pytest.approx(float(np.sqrt(np.mean((v - pred) ** 2))), rel=1e-10)


def test_spectral_init_spans_the_rescaled_matrix_top_subspace() -> None:
    m, n, k = 40, 30, 3
    rng = np.random.default_rng(4)
    M = rng.standard_normal((m, k)) @ np.diag([10.0, 8.0, 6.0]) @ rng.standard_normal((k, n)) / 5
    flat = rng.choice(m * n, size=900, replace=False)
    rows, cols = flat // n, flat % n
    v = M[rows, cols]
    dense = np.zeros((m, n))
    dense[rows, cols] = v * (m * n / 900)  # the |Ω|/(mn)-rescaled observed matrix
    _, s, vt = np.linalg.svd(dense)
    assert s[k] < 0.5 * s[k - 1]  # a clear gap, so the randomized SVD must match the dense one closely
    V0 = spectral_init(torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(v), (m, n), k, torch.Generator())
    proj = V0.numpy() @ np.linalg.pinv(V0.numpy())
    assert np.linalg.norm(proj - vt[:k].T @ vt[:k], 2) <= 1e-3
    np.testing.assert_allclose(np.linalg.norm(V0.numpy(), axis=0) ** 2, s[:k], rtol=1e-3)


@pytest.mark.parametrize("reg_scaling", ["none", "count"])
def test_bias_warm_start_equals_dense_baseline_solve(reg_scaling: str) -> None:
    m, n, reg = 9, 7, 0.4
    rows, cols, v = _tiny(3, m, n, 40)
    cnt_r, cnt_c = np.bincount(rows, minlength=m), np.bincount(cols, minlength=n)
    lam_r = reg * (cnt_r if reg_scaling == "count" else np.ones(m))
    lam_c = reg * (cnt_c if reg_scaling == "count" else np.ones(n))
    args = (
        torch.as_tensor(rows),
        torch.as_tensor(cols),
        torch.as_tensor(v - v.mean()),
        (torch.as_tensor(cnt_r), torch.as_tensor(cnt_c)),
        (torch.as_tensor(lam_r), torch.as_tensor(lam_c)),
    )
    b, c = fit_biases(*args)
    b0, c0 = _dense_baseline(rows, cols, v - v.mean(), lam_r, lam_c)
    # a warm start: the default sweeps stop on a small change (block Gauss–Seidel converges linearly) ...
    np.testing.assert_allclose(b.numpy(), b0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(c.numpy(), c0, rtol=0, atol=1e-6)
    # ... and converge to the dense solution
    b, c = fit_biases(*args, max_sweeps=5000, rtol=1e-15)
    np.testing.assert_allclose(b.numpy(), b0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c.numpy(), c0, rtol=0, atol=1e-10)
