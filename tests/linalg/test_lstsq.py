"""Sketch-preconditioned LSQR against numpy.linalg.lstsq; iterations independent of cond(A)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from precond.bench.solvers.problems import ill_conditioned
from precond.linalg import lstsq


@pytest.mark.parametrize("kind", ["gaussian", "sparse_sign", "srht"])
def test_sketch_lsqr_matches_numpy_and_iterations_do_not_grow_with_cond(kind: str) -> None:
    its = []
    for cond in (1e2, 1e6, 1e10):
        A, b = ill_conditioned(2000, 50, cond, seed=1)
        ref = np.linalg.lstsq(A, b, rcond=None)[0]
        res = lstsq(A, b, "sketch_lsqr", sketch_kind=kind)
        assert res.converged
        r_ref = np.linalg.norm(A @ ref - b)
        assert res.residual_norm <= r_ref * (1 + 1e-8)
        # forward error bounded by cond·eps·‖x‖ (what the dense LAPACK solve itself achieves)
        assert np.linalg.norm(res.solution - ref) <= max(1e-9, cond * 1e-13) * np.linalg.norm(ref)
        its.append(res.iterations)
    assert max(its) <= 60 and max(its) - min(its) <= 10


def test_plain_lsqr_needs_more_iterations_when_ill_conditioned() -> None:
    A, b = ill_conditioned(2000, 50, 1e6, seed=2)
    plain = lstsq(A, b, "lsqr", tol=1e-14, max_iter=2000)
    sk = lstsq(A, b, "sketch_lsqr")
    assert plain.iterations > 3 * sk.iterations


def test_plain_lsqr_reports_an_ill_conditioned_stop_honestly() -> None:
    """SciPy's LSQR stops by default once its cond(A) estimate passes 1e8 (istop 3) with an iterate far from the
    solution; lstsq turns that stop off, so it either converges or says it hit the cap."""
    for cond, cap in ((1e6, 5000), (1e10, 3000)):
        A, b = ill_conditioned(2000, 50, cond, seed=1)
        ref = np.linalg.lstsq(A, b, rcond=None)[0]
        res = lstsq(A, b, "lsqr", tol=1e-14, max_iter=cap)
        err = np.linalg.norm(res.solution - ref) / np.linalg.norm(ref)
        if cond == 1e6:
            assert res.converged and res.iterations < cap and err < 1e-7
        else:
            assert res.status == "max_iter" and res.iterations == cap and err > 0.1


def test_sparse_and_torch_inputs_and_direct() -> None:
    rng = np.random.default_rng(0)
    A = sp.random_array((3000, 40), density=0.05, rng=rng) + sp.vstack([sp.eye_array(40), sp.csr_array((2960, 40))])
    b = rng.standard_normal(3000)
    ref = np.linalg.lstsq(A.toarray(), b, rcond=None)[0]
    for method in ("sketch_lsqr", "lsqr", "direct"):
        res = lstsq(sp.csr_array(A), b, method)
        np.testing.assert_allclose(res.solution, ref, rtol=1e-8, atol=1e-10)
    out = lstsq(torch.from_numpy(A.toarray()), torch.from_numpy(b))
    assert isinstance(out.solution, torch.Tensor)
    np.testing.assert_allclose(out.solution.numpy(), ref, rtol=1e-8, atol=1e-10)


def test_lstsq_bad_input() -> None:
    A = np.random.default_rng(0).standard_normal((50, 5))
    b = np.ones(50)
    with pytest.raises(ValueError, match="tall"):
        lstsq(A.T, b[:5])
    with pytest.raises(ValueError, match="shape"):
        lstsq(A, b[:-1])
    with pytest.raises(ValueError, match="NaN"):
        lstsq(A * np.nan, b)
    with pytest.raises(ValueError, match="method"):
        lstsq(A, b, "qr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sketch"):
        lstsq(A, b, sketch_kind="countsketch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="oversampling"):
        lstsq(A, b, oversampling=1.0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_iter"):
            lstsq(A, b, "lsqr", max_iter=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank deficient"):
        lstsq(np.c_[A, A[:, :1]], b)
