"""Biases and cold start (oracles: data built from known offsets; the fit without the empty rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precond.completion import complete
from tests.completion.conftest import low_rank, n_samples, sample


@pytest.mark.parametrize("rank", [1, 3])
def test_pure_offsets_are_predicted_exactly(rank: int) -> None:
    m, n = 80, 60
    rng = np.random.default_rng(0)
    a, b, mu = rng.standard_normal(m), rng.standard_normal(n), 3.5
    M = mu + a[:, None] + b[None, :]
    rows, cols = sample(m, n, 900, seed=0, min_per_line=3)
    res = complete(rows, cols, M[rows, cols], (m, n), rank, reg=1e-10, biases=True, tol=1e-14, max_iter=300)
    full = res.predict(*np.nonzero(np.ones((m, n)))).reshape(m, n)
    np.testing.assert_allclose(full, M, rtol=0, atol=1e-6)  # unobserved entries too
    assert res.mean == pytest.approx(M[rows, cols].mean(), rel=1e-14)
    assert res.row_bias is not None and res.col_bias is not None
    # the offsets are identified up to (a + t, b − t); the ridge term fixes t, the sum is exact
    np.testing.assert_allclose(res.mean + res.row_bias.numpy()[:, None] + res.col_bias.numpy()[None, :], M, atol=1e-5)


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("reg", [0.0, 0.1])
@pytest.mark.parametrize("reg_scaling", ["none", "count"])
def test_cold_start_rows_and_columns(biases: bool, reg: float, reg_scaling: str) -> None:
    m, n, k = 100, 80, 2
    M = low_rank(m, n, k, seed=1) + (2.0 if biases else 0.0)
    rows, cols = sample(m, n, n_samples(m, n, k, c=2.0), seed=1, min_per_line=k + 1)
    keep = (rows != 7) & (cols != 5) & (cols != 6)  # row 7 and columns 5, 6 have no observations
    rows, cols = rows[keep], cols[keep]
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=reg, biases=biases, reg_scaling=reg_scaling, tol=1e-10)
    for t in (res.U, res.V) + ((res.row_bias, res.col_bias) if biases else ()):
        assert t is not None and torch.isfinite(t).all()
    assert (res.U[7] == 0).all() and (res.V[5:7] == 0).all()
    all_r, all_c = np.nonzero(np.ones((m, n)))
    full = res.predict(all_r, all_c).reshape(m, n)
    assert np.isfinite(full).all()
    if biases:
        assert res.row_bias is not None and res.col_bias is not None and res.mean is not None
        assert res.row_bias[7] == 0 and (res.col_bias[5:7] == 0).all()
        np.testing.assert_allclose(full[7], res.mean + res.col_bias.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(full[:, 5], res.mean + res.row_bias.numpy(), rtol=0, atol=1e-12)
    else:
        assert (full[7] == 0).all() and (full[:, 5] == 0).all()
    if reg == 0.0:  # the other rows are still recovered
        seen = np.ones((m, n), dtype=bool)
        seen[7] = False
        seen[:, 5:7] = False
        assert np.abs(full - M)[seen].max() <= 1e-6


def test_under_observed_row_without_regularization_takes_min_norm_solution() -> None:
    m, n, k = 60, 50, 4
    M = low_rank(m, n, k, seed=2)
    rows, cols = sample(m, n, n_samples(m, n, k, c=2.0), seed=2, min_per_line=k)
    keep = (rows != 3) | (np.cumsum(rows == 3) <= 2)  # row 3 keeps 2 < k observations: singular normal matrix
    rows, cols = rows[keep], cols[keep]
    res = complete(rows, cols, M[rows, cols], (m, n), k, reg=0.0, max_iter=30)
    assert torch.isfinite(res.U).all() and torch.isfinite(res.V).all()
    sel = rows == 3
    Vs = res.V.numpy()[cols[sel]]
    expected = np.linalg.lstsq(Vs, M[3, cols[sel]], rcond=None)[0]  # min-norm least squares
    np.testing.assert_allclose(res.U.numpy()[3], expected, rtol=0, atol=1e-8)
