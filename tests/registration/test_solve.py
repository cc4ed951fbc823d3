"""solve(): every method against numpy.linalg.solve / pinv and its closed-form definition."""

from __future__ import annotations

import numpy as np
import pytest

from precond.registration import METHODS, degeneracy, solve
from tests.registration import scenes


def spd(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((6, 6)))[0]
    return (q * eigenvalues) @ q.T


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_well_conditioned_every_method_is_the_newton_step(method: str, seed: int) -> None:
    # eigenvalues in [300, 2500]: cond < 10, all above ME's 120 and LOAM's 100: no detector fires
    h = spd(np.linspace(300.0, 2500.0, 6), seed)
    b = np.random.default_rng(seed + 10).standard_normal(6) * 100
    res = solve(h, b, method=method, pcg_tol=1e-14)
    np.testing.assert_allclose(res.step, np.linalg.solve(h, b), rtol=1e-10, atol=1e-14)
    assert res.status == "solved" and not res.degenerate.any()


@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0])
def test_dcreg_pcg_is_the_gauss_newton_step_whatever_the_clamp(kappa: float) -> None:
    # Pitfall 1: on a 6×6 SPD system PCG to convergence returns H⁻¹b, even when axes are flagged and clamped.
    h = spd(np.array([0.5, 3.0, 40.0, 800.0, 2000.0, 9000.0]), 3)
    b = np.random.default_rng(4).standard_normal(6) * 50
    res = solve(h, b, method="dcreg", kappa=kappa, pcg_tol=1e-10)
    assert res.report.degenerate and res.status == "solved" and res.iterations <= 10
    np.testing.assert_allclose(res.step, np.linalg.solve(h, b), rtol=1e-7)
    # DCReg's default tolerance: ‖H δ − b‖ ≤ 1e-6 · max(1, ‖b‖)
    loose = solve(h, b, method="dcreg", kappa=kappa)
    assert np.linalg.norm(h @ loose.step - b) <= 1e-6 * max(1.0, np.linalg.norm(b))


@pytest.mark.parametrize("name", ["single_plane", "corridor", "cylinder", "shifted_cylinder"])
@pytest.mark.parametrize("method", ["dcreg", "direct"])
def test_singular_scenes_take_the_minimum_norm_step(name: str, method: str) -> None:
    pts, normals, _ = scenes.SCENES[name]()
    h = scenes.hessian(pts, normals)
    b = np.random.default_rng(5).standard_normal(6) * 10  # includes a null-space component (inconsistent)
    res = solve(h, b, method=method, pcg_tol=1e-12)
    expected = np.linalg.pinv(h, rcond=1e-9, hermitian=True) @ b
    np.testing.assert_allclose(res.step, expected, rtol=1e-7, atol=1e-12)
    null = np.linalg.eigh(h)[1][:, : 6 - res.report.rank]
    np.testing.assert_allclose(null.T @ res.step, 0.0, atol=1e-12)
    assert res.status == "solved"


def test_baselines_follow_their_definitions_on_a_diagonal_system() -> None:
    lam = np.array([150.0, 1.0, 5000.0, 200.0, 50.0, 1000.0])
    h, b = np.diag(lam), np.ones(6)
    direct = b / lam
    np.testing.assert_allclose(solve(h, b, method="direct").step, direct)
    me = lam < 120  # ME-SR / ME-TSVD zero the flagged eigen-directions
    np.testing.assert_allclose(solve(h, b, method="sr").step, np.where(me, 0.0, direct))
    np.testing.assert_allclose(solve(h, b, method="tsvd").step, np.where(me, 0.0, direct))
    np.testing.assert_allclose(solve(h, b, method="loam").step, np.where(lam < 100, 0.0, direct))
    fcn = 5000.0 / lam > 10
    np.testing.assert_allclose(solve(h, b, method="sr", detector="fcn").step, np.where(fcn, 0.0, direct))
    np.testing.assert_allclose(solve(h, b, method="treg").step, b / (lam + 100.0))
    np.testing.assert_allclose(solve(h, b, method="treg", gamma=7.0).step, b / (lam + 7.0))
    np.testing.assert_allclose(solve(h, b, method="dcreg", pcg_tol=1e-14).step, direct, rtol=1e-10)


def test_truncated_pcg_falls_back_to_the_direct_step() -> None:
    h = spd(np.array([0.5, 3.0, 40.0, 800.0, 2000.0, 9000.0]), 6)
    b = np.arange(1.0, 7.0)
    res = solve(h, b, method="dcreg", pcg_max_iter=1, pcg_tol=1e-12)
    assert res.status == "fallback" and res.iterations == 1
    np.testing.assert_allclose(res.step, np.linalg.solve(h, b), rtol=1e-10)


def test_zero_rhs_and_precomputed_report() -> None:
    h = spd(np.linspace(1.0, 10.0, 6), 7)
    res = solve(h, np.zeros(6))
    assert res.status == "zero_rhs" and not res.step.any()
    rep = degeneracy(np.diag([1.0, 1e4, 1e4, 1e4, 1e4, 1e4]))  # a report of another H: its detection is used
    res = solve(h, np.ones(6), method="sr", report=rep)
    assert res.report is rep and res.degenerate[0]
