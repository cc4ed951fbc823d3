"""``MatrixCompletion``: pickle, get_params/set_params, clone, and agreement with the function API."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, clone

from precond.completion import MatrixCompletion, complete, from_scipy
from tests.completion.conftest import low_rank, n_samples, sample

M_, N_, K_ = 60, 50, 3


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    M = low_rank(M_, N_, K_, seed=9) + 3.0
    rows, cols = sample(M_, N_, n_samples(M_, N_, K_, c=2.0), seed=9, min_per_line=K_)
    return rows, cols, M[rows, cols]


def test_is_a_scikit_learn_estimator_with_round_trip_params() -> None:
    est = MatrixCompletion(rank=4, reg=0.2, biases=True, reg_scaling="count")
    assert isinstance(est, BaseEstimator)
    params = est.get_params()
    assert params["rank"] == 4 and params["reg"] == 0.2 and params["biases"] is True
    assert set(params) == {
        "rank", "reg", "solver", "max_iter", "tol", "biases", "reg_scaling", "duplicates", "seed", "shape", "dtype",
        "trim", "sample_splitting",
    }  # fmt: skip
    est.set_params(rank=2, tol=1e-3)
    assert est.rank == 2 and est.tol == 1e-3
    assert MatrixCompletion(**est.get_params()).get_params() == est.get_params()
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_a_parameter=1)


@pytest.mark.parametrize("biases", [False, True])
def test_predict_equals_the_function_api_and_survives_pickle(data, biases: bool) -> None:  # type: ignore[no-untyped-def]
    rows, cols, vals = data
    est = MatrixCompletion(rank=K_, reg=0.05, biases=biases, max_iter=20, shape=(M_, N_)).fit((rows, cols, vals))
    res = complete(rows, cols, vals, (M_, N_), K_, reg=0.05, biases=biases, max_iter=20)
    qr, qc = np.nonzero(np.ones((M_, N_)))
    pred = est.predict(qr, qc)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.float64
    np.testing.assert_array_equal(pred, res.predict(qr, qc))
    assert est.n_iter_ == res.iterations and est.shape_ == (M_, N_)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(qr, qc), pred)
    assert again.get_params() == est.get_params()
    res_again = pickle.loads(pickle.dumps(res))
    torch.testing.assert_close(res_again.U, res.U, rtol=0, atol=0)


def test_fit_on_scipy_sparse_equals_fit_on_tuple(data) -> None:  # type: ignore[no-untyped-def]
    rows, cols, vals = data
    X = sp.csr_matrix((vals, (rows, cols)), shape=(M_, N_))
    a = MatrixCompletion(rank=K_, max_iter=5).fit(X)
    r2, c2, v2, shape = from_scipy(X)
    b = MatrixCompletion(rank=K_, max_iter=5, shape=shape).fit((r2, c2, v2))
    assert a.shape_ == (M_, N_)
    qr, qc = np.nonzero(np.ones((M_, N_)))
    np.testing.assert_array_equal(a.predict(qr, qc), b.predict(qr, qc))
    # the tuple order differs from CSR order only by a permutation: the fit agrees to rounding
    c = MatrixCompletion(rank=K_, max_iter=5).fit((rows, cols, vals))
    np.testing.assert_allclose(c.predict(qr, qc), a.predict(qr, qc), rtol=0, atol=1e-10)


def test_shape_inference_and_errors(data) -> None:  # type: ignore[no-untyped-def]
    rows, cols, vals = data
    est = MatrixCompletion(rank=2, max_iter=2).fit((rows, cols, vals))
    assert est.shape_ == (int(rows.max()) + 1, int(cols.max()) + 1)
    with pytest.raises(ValueError, match="not fitted"):
        MatrixCompletion().predict([0], [0])
    with pytest.raises(ValueError, match=r"`X` as a tuple must be \(rows, cols, values\)"):
        MatrixCompletion().fit((rows, cols))
    with pytest.raises(ValueError, match=r"Expected 2D array"):
        MatrixCompletion().fit(np.ones(3))  # a dense X is 2-D with NaN for missing entries (test_sklearn.py)
    with pytest.raises(ValueError, match=r"`shape` \(3, 3\) does not match"):
        MatrixCompletion(shape=(3, 3)).fit(sp.csr_matrix(np.ones((4, 4))))
    with pytest.raises(ValueError, match=r"`rows` has row index"):
        est.predict([M_ + 5], [0])


def test_fit_records_validation_history(data) -> None:  # type: ignore[no-untyped-def]
    rows, cols, vals = data
    est = MatrixCompletion(rank=K_, max_iter=4).fit((rows, cols, vals), validation=(rows[:10], cols[:10], vals[:10]))
    assert all(h[2] is not None for h in est.result_.history)


def test_import_needs_neither_scipy_nor_sklearn() -> None:
    code = (
        "import sys, precond.completion as pc\n"
        "assert 'scipy' not in sys.modules and 'sklearn' not in sys.modules, sorted(sys.modules)\n"
        "pc.complete([0, 1], [1, 0], [1.0, 2.0], (2, 2), 1)\n"
        "assert 'scipy' not in sys.modules and 'sklearn' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
