"""``MatrixCompletion`` as a scikit-learn transformer: ``check_estimator``, dense NaN input, ``transform`` against a
dense float64 ridge oracle, ``fit_transform``, ``predict(X)``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

from precond.completion import ConvergenceWarning, MatrixCompletion
from precond.completion._estimator import SKLEARN_EXPECTED_FAILED_CHECKS
from tests.completion.conftest import low_rank, n_samples, sample

M_, N_, K_ = 40, 30, 3


def _ridge_oracle(X: np.ndarray, V: np.ndarray, lam: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """Per row of the dense-with-NaN ``X``: ``numpy.linalg.lstsq`` on ``[W; √λ I] x = [t; 0]`` (float64)."""
    design = V if offset is None else np.hstack([V, np.ones((V.shape[0], 1))])
    out = np.zeros((X.shape[0], design.shape[1]))
    for i, row in enumerate(X):
        seen = ~np.isnan(row)
        if not seen.any():
            continue
        t = row[seen] - (0.0 if offset is None else offset[seen])
        A = np.vstack([design[seen], np.sqrt(lam[i]) * np.eye(design.shape[1])])
        out[i] = np.linalg.lstsq(A, np.concatenate([t, np.zeros(design.shape[1])]), rcond=None)[0]
    return out


def test_check_estimator_passes_except_the_listed_checks() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = check_estimator(
            MatrixCompletion(rank=1, max_iter=5), expected_failed_checks=SKLEARN_EXPECTED_FAILED_CHECKS, on_fail=None
        )
    status = {}
    for r in results:
        status.setdefault(r["check_name"], set()).add(r["status"])
    failed = sorted(name for name, s in status.items() if "failed" in s)
    assert failed == [], failed
    assert {name for name, s in status.items() if "xfail" in s} == set(SKLEARN_EXPECTED_FAILED_CHECKS)
    assert sum("passed" in s for s in status.values()) >= 30
    assert all(len(reason) > 40 for reason in SKLEARN_EXPECTED_FAILED_CHECKS.values())
    assert all(name in MatrixCompletion.__doc__ for name in SKLEARN_EXPECTED_FAILED_CHECKS)  # type: ignore[operator]


@pytest.fixture(scope="module")
def dense() -> np.ndarray:
    M = low_rank(M_, N_, K_, seed=4) + 2.0
    rows, cols = sample(M_, N_, n_samples(M_, N_, K_, c=2.5), seed=4, min_per_line=K_ + 1)
    X = np.full((M_, N_), np.nan)
    X[rows, cols] = M[rows, cols]
    return X


def test_dense_nan_input_equals_the_tuple_and_sparse_inputs(dense: np.ndarray) -> None:
    rows, cols = np.nonzero(~np.isnan(dense))
    a = MatrixCompletion(rank=K_, max_iter=8, tol=1.0).fit(dense)
    b = MatrixCompletion(rank=K_, max_iter=8, tol=1.0, shape=dense.shape).fit((rows, cols, dense[rows, cols]))
    c = MatrixCompletion(rank=K_, max_iter=8, tol=1.0).fit(
        sp.coo_matrix((dense[rows, cols], (rows, cols)), shape=dense.shape)
    )
    assert a.shape_ == dense.shape and a.n_features_in_ == N_ == b.n_features_in_ == c.n_features_in_
    qr, qc = np.nonzero(np.ones(dense.shape))
    np.testing.assert_array_equal(a.predict(qr, qc), b.predict(qr, qc))
    np.testing.assert_array_equal(a.predict(qr, qc), c.predict(qr, qc))
    with pytest.raises(ValueError, match="empty"):
        MatrixCompletion(rank=1).fit(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="inf"):
        MatrixCompletion(rank=1).fit(np.array([[1.0, np.inf], [2.0, 3.0]]))


@pytest.mark.parametrize(("biases", "reg_scaling"), [(False, "none"), (True, "none"), (True, "count")])
def test_transform_is_one_exact_ridge_solve_per_row(dense: np.ndarray, biases: bool, reg_scaling: str) -> None:
    est = MatrixCompletion(rank=K_, reg=0.3, biases=biases, reg_scaling=reg_scaling, max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(dense)
    res = est.result_
    V = res.V.numpy()
    rng = np.random.default_rng(0)
    new = low_rank(7, N_, K_, seed=11) + 2.0
    new[rng.random(new.shape) < 0.6] = np.nan
    new[3] = np.nan  # a cold-start row: zero factor
    counts = (~np.isnan(new)).sum(1).astype(float)
    lam = 0.3 * counts if reg_scaling == "count" else np.full(7, 0.3)
    offset = None if not biases else res.mean + res.col_bias.numpy()  # type: ignore[operator, union-attr]
    oracle = _ridge_oracle(new, V, lam, offset)
    got = est.transform(new)
    assert got.shape == (7, K_)
    np.testing.assert_allclose(got, oracle[:, :K_], rtol=1e-9, atol=1e-10)
    assert np.all(got[3] == 0)
    # predict(X): the completed rows of X
    full = oracle[:, :K_] @ V.T
    if biases:
        full = full + oracle[:, K_:] + offset
    np.testing.assert_allclose(est.predict(new), full, rtol=1e-9, atol=1e-10)
    # the same rows as a tuple and as a sparse matrix
    r, c = np.nonzero(~np.isnan(new))
    np.testing.assert_allclose(est.transform((r, c, new[r, c])), got[: r.max() + 1], rtol=1e-12, atol=1e-12)
    S = sp.csr_matrix((new[r, c], (r, c)), shape=new.shape)
    np.testing.assert_allclose(est.transform(S), got, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="features"):
        est.transform(new[:, :-1])


def test_fit_transform_refolds_the_training_rows_and_matches_u_at_convergence(dense: np.ndarray) -> None:
    est = MatrixCompletion(rank=K_, reg=1.0, max_iter=500, tol=1e-12)
    Z = est.fit_transform(dense)
    np.testing.assert_array_equal(Z, est.transform(dense))
    assert est.result_.converged
    np.testing.assert_allclose(Z, est.result_.U.numpy(), rtol=0, atol=1e-6)


def test_unfitted_transform_and_predict_raise_not_fitted(dense: np.ndarray) -> None:
    for call in (lambda e: e.transform(dense), lambda e: e.predict(dense), lambda e: e.predict([0], [0])):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(MatrixCompletion())
