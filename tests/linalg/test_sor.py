"""SOR / SSOR-PCG against dense oracles: a row-by-row Gauss–Seidel/SOR sweep, PCG with the explicit SSOR matrix,
the closed-form Jacobi radius of the 2-D Laplacian, and a direct solve."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from precond.bench.solvers.problems import laplacian_2d
from precond.linalg import SparseFamily, jacobi_radius, sor, sor_batch, ssor_pcg, ssor_pcg_batch, young_omega


def dense_sor_sweeps(A: np.ndarray, b: np.ndarray, omega: float, sweeps: int) -> np.ndarray:
    """Textbook SOR, one row at a time (Saad eq. 4.8)."""
    x = np.zeros_like(b)
    for _ in range(sweeps):
        for i in range(len(b)):
            sigma = A[i] @ x - A[i, i] * x[i]
            x[i] = (1 - omega) * x[i] + omega * (b[i] - sigma) / A[i, i]
    return x


def random_spd_sparse(n: int, seed: int) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    M = sp.random_array((n, n), density=0.05, rng=rng)
    S = M + M.T
    return sp.csr_array(S + sp.diags_array(np.abs(S).sum(1) + 1.0))


@pytest.mark.parametrize("omega", [0.7, 1.0, 1.5])
def test_sor_iterates_equal_rowwise_sweeps(omega: float) -> None:
    A = random_spd_sparse(60, 1)
    b = np.random.default_rng(2).standard_normal(60)
    for k in (1, 3, 7):
        res = sor(A, b, omega, tol=0.0, max_iter=k)
        assert res.iterations == k and res.status == "max_iter"
        np.testing.assert_allclose(res.solution, dense_sor_sweeps(A.toarray(), b, omega, k), rtol=1e-12, atol=1e-12)


def test_sor_and_ssor_pcg_solve_to_tolerance() -> None:
    A = laplacian_2d(12) + 0.05 * sp.eye_array(144)
    b = np.random.default_rng(0).standard_normal(144)
    exact = spla.spsolve(sp.csc_array(A), b)
    for solve in (sor, ssor_pcg):
        res = solve(A, b, 1.6, tol=1e-10)
        assert res.converged and res.iterations == len(res.history) - 1
        assert res.history[-1] <= 1e-10 < res.history[-2]
        np.testing.assert_allclose(res.solution, exact, rtol=0, atol=1e-8 * np.abs(exact).max())


def test_ssor_pcg_equals_pcg_with_explicit_ssor_matrix() -> None:
    A = random_spd_sparse(50, 3)
    Ad = A.toarray()
    b = np.random.default_rng(4).standard_normal(50)
    omega = 1.3
    D = np.diag(np.diag(Ad))
    L = np.tril(Ad, -1)
    M = (D + omega * L) @ np.linalg.inv(D) @ (D + omega * L.T) / (omega * (2 - omega))
    Minv = np.linalg.inv(M)
    x, r = np.zeros(50), b.copy()
    z = Minv @ r
    p, rz = z.copy(), r @ z
    for k in range(1, 9):
        ap = Ad @ p
        alpha = rz / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        z = Minv @ r
        rz, rz_old = r @ z, rz
        p = z + rz / rz_old * p
        res = ssor_pcg(A, b, omega, tol=0.0, max_iter=k)
        np.testing.assert_allclose(res.solution, x, rtol=1e-9, atol=1e-11)


def test_young_omega_closed_form_and_optimality() -> None:
    m, c = 10, 0.3
    A = laplacian_2d(m) + c * sp.eye_array(m * m)
    beta = 4 * math.cos(math.pi / (m + 1)) / (4 + c)
    assert jacobi_radius(A) == pytest.approx(beta, rel=1e-10)
    w = young_omega(A)
    assert w == pytest.approx(1 + (beta / (1 + math.sqrt(1 - beta**2))) ** 2, rel=1e-12)
    b = np.random.default_rng(0).standard_normal(m * m)
    its = {om: sor(A, b, om).iterations for om in (1.0, 1.2, w, 1.9)}
    assert its[w] == min(its.values()) and its[w] < 0.4 * its[1.0]


def test_batch_matches_single_solves_per_system_parameters() -> None:
    K = laplacian_2d(8)
    rng = np.random.default_rng(5)
    B = rng.standard_normal((5, 64))
    omega = np.array([1.0, 1.2, 1.5, 1.7, 1.9])
    scale = np.array([1.0, 0.5, 2.0, 1.0, 0.1])
    shift = np.array([0.0, 0.3, 0.1, 1.0, 1.0])
    fam = SparseFamily.build(K)
    for batched, single in ((sor_batch, sor), (ssor_pcg_batch, ssor_pcg)):
        res = batched(fam, B, omega, scale=scale, shift=shift, tol=1e-9)
        for j in range(5):
            Aj = scale[j] * K + shift[j] * sp.eye_array(64)
            one = single(Aj, B[j], float(omega[j]), tol=1e-9)
            assert res.iterations[j] == one.iterations and res.status[j] == "converged"
            np.testing.assert_allclose(res.solution[j], one.solution, rtol=1e-10, atol=1e-12)


def test_deep_chain_uses_sequential_solve_and_agrees() -> None:
    n = 3000  # a 1-D chain has n levels: SuperLU's sequential triangular solve is used
    A = sp.csr_array(sp.diags_array([-np.ones(n - 1), 2.5 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1]))
    fam = SparseFamily.build(A)
    assert fam.lower.n_levels == 0
    b = np.random.default_rng(0).standard_normal(n)
    res = sor(fam, b, 1.2, tol=1e-10)
    assert res.converged
    np.testing.assert_allclose(A @ res.solution, b, atol=1e-8 * np.linalg.norm(b))


def test_torch_in_torch_out_and_warm_start() -> None:
    A = laplacian_2d(6)
    b = torch.randn(36, dtype=torch.float64)
    res = sor(torch.from_numpy(A.toarray()), b, 1.5, tol=1e-12)
    assert isinstance(res.solution, torch.Tensor) and res.converged
    warm = ssor_pcg(A, b, 1.5, tol=1e-10, x0=res.solution)  # PCG's tolerance is relative to ‖b‖
    assert warm.iterations == 0 and warm.converged


def test_not_positive_definite_reports_status() -> None:
    A = laplacian_2d(6) - 1.5 * sp.eye_array(36)  # symmetric, positive diagonal, indefinite
    b = np.random.default_rng(0).standard_normal(36)
    assert sor(A, b, 1.0, max_iter=5000).status == "diverged"
    assert ssor_pcg(A, b, 1.0).status in ("breakdown", "max_iter")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda A, b: sor(np.ones((3, 4)), b[:3]), "square"),
        (lambda A, b: sor(A + sp.csr_array(([1.0], ([0], [1])), shape=A.shape), b), "symmetric"),
        (lambda A, b: sor(A - 10 * sp.eye_array(A.shape[0]), b), "positive"),
        (lambda A, b: sor(A, b, 2.0), "omega"),
        (lambda A, b: sor(A, b, 0.0), "omega"),
        (lambda A, b: ssor_pcg(A, b, -1.0), "omega"),
        (lambda A, b: sor(A, b[:-1]), "shape"),
        (lambda A, b: sor(A, np.full_like(b, np.nan)), "NaN"),
        (lambda A, b: sor(A.toarray() * np.inf, b), "NaN or infinite"),
        (lambda A, b: sor(A, b, tol=-1.0), "tol"),
        (lambda A, b: sor(A, b, max_iter=-2), "max_iter"),
        (lambda A, b: sor_batch(A, np.zeros((0, A.shape[0]))), "no right-hand"),
        (lambda A, b: sor_batch(A, np.stack([b, b]), shift=np.zeros(3)), "one value per system"),
        (lambda A, b: sor_batch(A, np.stack([b, b]), shift=-10.0), "not positive definite"),
    ],
)
def test_bad_input(call: object, match: str) -> None:
    A = laplacian_2d(4)
    b = np.ones(16)
    with pytest.raises(ValueError, match=match):
        call(A, b)  # type: ignore[operator]
