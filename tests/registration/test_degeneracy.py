"""DCReg's analysis against hand-derived null spaces (tests/registration/scenes.py) and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from precond.registration import AXES, degeneracy, point_to_plane, so3_exp
from tests.registration import scenes


def bits(mask: np.ndarray) -> str:
    return "".join("1" if m else "0" for m in mask)


#: hand-derived numerical rank of H (6 − dim of the null space in scenes.py's docstrings)
RANKS = {"single_plane": 3, "parallel_planes": 3, "corridor": 5, "cylinder": 4, "shifted_cylinder": 4, "room": 6}


@pytest.mark.parametrize("name", ["single_plane", "parallel_planes", "corridor", "cylinder", "room"])
def test_flags_exactly_the_unobservable_motions(name: str) -> None:
    pts, normals, expected = scenes.SCENES[name]()
    rep = degeneracy(scenes.hessian(pts, normals))
    assert bits(rep.mask) == bits(expected)
    assert bits(rep.unobservable) == bits(expected)
    assert rep.rank == RANKS[name]
    assert np.isfinite(rep.preconditioner()).all()
    assert rep.weak_axes == tuple(a for a, m in zip(AXES, expected, strict=True) if m)


def test_shifted_cylinder_schur_sees_what_the_diagonal_block_misses() -> None:
    # Null space: tz, and rotation about the axis through c = (0.8, 0.3): ω = e_z with v = c × e_z = (0.3, −0.8, 0).
    # Rotation free → translation along (0.3, −0.8, 0) is absorbed (S_t null, assigned to y: 0.64/0.73 of it);
    # translation free → rz is absorbed (S_R null). The diagonal block H_RR alone sees rz through the lever arm.
    pts, normals, _ = scenes.SCENES["shifted_cylinder"]()
    h = scenes.hessian(pts, normals)
    rep = degeneracy(h)
    # (p × n)_z = (c × n)_z on the surface: Σ over uniform angles = N |c|² / 2, far from zero
    assert h[2, 2] == pytest.approx(len(pts) * (0.8**2 + 0.3**2) / 2, rel=1e-9)
    assert bits(rep.unobservable) == "001011" and bits(rep.mask) == "001011" and rep.rank == 4
    assert rep.eigenvalues_rot[2] == 0.0
    u = np.array([0.3, -0.8, 0.0]) / np.hypot(0.3, 0.8)
    np.testing.assert_allclose(rep.contribution_trans[:, 1], u**2, atol=1e-9)
    np.testing.assert_allclose(rep.contribution_trans[:, 2], [0, 0, 1], atol=1e-9)


def test_long_corridor_relative_test_flags_roll_as_weak_not_unobservable() -> None:
    # Pitfall 4: the per-subspace test is relative; a 20 m corridor has pitch info (floor lever arm x ∈ ±10 m)
    # over 10 × its roll info, so roll is "weak" although observable.
    pts, normals, _ = scenes.corridor(length=10.0)
    rep = degeneracy(scenes.hessian(pts, normals))
    assert bits(rep.unobservable) == "000100"
    assert bits(rep.mask) == "100100"
    assert rep.eigenvalues_rot.max() / rep.eigenvalues_rot[0] > 10


def test_schur_complements_are_inverse_marginal_covariances() -> None:
    # For SPD H: S_R⁻¹ = (H⁻¹)_RR and S_t⁻¹ = (H⁻¹)_tt (block inversion); eigenvalues of S are those of the report.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 6)) * [3, 1, 2, 1, 0.5, 4]
    h = a.T @ a
    rep = degeneracy(h)
    cov = np.linalg.inv(h)
    np.testing.assert_allclose(np.linalg.inv(rep.schur_rot), cov[:3, :3], rtol=1e-10)
    np.testing.assert_allclose(np.linalg.inv(rep.schur_trans), cov[3:, 3:], rtol=1e-10)
    np.testing.assert_allclose(np.sort(rep.eigenvalues_rot), np.linalg.eigvalsh(rep.schur_rot), rtol=1e-12)
    v = rep.eigenvectors_rot
    np.testing.assert_allclose(v.T @ rep.schur_rot @ v, np.diag(rep.eigenvalues_rot), atol=1e-9 * h.max())
    np.testing.assert_allclose(rep.contribution_rot.sum(axis=0), 1.0, rtol=1e-12)
    assert rep.cond_full == pytest.approx(np.linalg.cond(h), rel=1e-8)


def _moved_hessian(pts: np.ndarray, normals: np.ndarray, g: np.ndarray) -> np.ndarray:
    """H at the estimate T = G when the target (world) is moved by G: planes nᵀx + d = 0 moved into G's frame."""
    n_world = normals @ g[:3, :3].T
    offsets = -np.einsum("ni,ni->n", n_world, pts @ g[:3, :3].T + g[:3, 3])
    _, jac = point_to_plane(pts, n_world, offsets, g)
    return jac.T @ jac


@pytest.mark.parametrize("name", ["corridor", "cylinder", "shifted_cylinder", "room"])
def test_report_is_invariant_under_a_rigid_motion_of_the_world(name: str) -> None:
    pts, normals, _ = scenes.SCENES[name]()
    base = degeneracy(scenes.hessian(pts, normals))
    rng = np.random.default_rng(1)
    g = np.eye(4)
    g[:3, :3], g[:3, 3] = scenes.random_rotation(rng), rng.uniform(-50, 50, 3)
    moved = degeneracy(_moved_hessian(pts, normals, g))
    assert bits(moved.mask) == bits(base.mask) and bits(moved.unobservable) == bits(base.unobservable)
    scale = base.eigenvalues_full.max()
    np.testing.assert_allclose(moved.eigenvalues_rot, base.eigenvalues_rot, atol=1e-9 * scale)
    np.testing.assert_allclose(moved.eigenvalues_trans, base.eigenvalues_trans, atol=1e-9 * scale)


def test_flags_follow_the_axes_when_the_scene_turns_in_the_sensor_frame() -> None:
    # A corridor turned 90° about z runs along y: its unobservable motion becomes ty.
    pts, normals, _ = scenes.corridor()
    rz = so3_exp(np.array([0.0, 0.0, np.pi / 2]))
    rep = degeneracy(scenes.hessian(pts @ rz.T, normals @ rz.T))
    assert bits(rep.mask) == "000010"
    # and a cylinder tilted to lie along x: tx, rx
    ry = so3_exp(np.array([0.0, np.pi / 2, 0.0]))
    pts, normals, _ = scenes.cylinder()
    rep = degeneracy(scenes.hessian(pts @ ry.T, normals @ ry.T))
    assert bits(rep.mask) == "100100"


def test_diagonal_weak_mode_is_ambiguous() -> None:
    # S_t with its weak mode along (1, 1, 0)/√2: half x, half y; the label is arbitrary, the report says so.
    c = np.sqrt(0.5)
    v = np.array([[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 1.0]])
    h = np.zeros((6, 6))
    h[:3, :3] = np.diag([100.0, 120.0, 140.0])
    h[3:, 3:] = v @ np.diag([1.0, 100.0, 100.0]) @ v.T
    rep = degeneracy(h)
    assert rep.mask[3:].sum() == 1
    weak = int(np.flatnonzero(rep.mask[3:])[0])
    np.testing.assert_allclose(rep.contribution_trans[:2, weak], [0.5, 0.5], atol=1e-12)
    assert rep.ambiguous[3 + weak] and not rep.ambiguous[:3].any()


def test_baseline_detectors_and_clamp_on_a_diagonal_hessian() -> None:
    lam = np.array([150.0, 1.0, 5000.0, 200.0, 50.0, 1000.0])  # rx ry rz tx ty tz
    rep = degeneracy(np.diag(lam))
    np.testing.assert_allclose(rep.eigenvalues_full, np.sort(lam))
    assert bits(rep.loam_mask) == "110000" and rep.loam_factor == 1.0  # λ < 100, ascending
    assert bits(rep.me_mask) == "110000"  # λ < 120
    assert bits(rep.fcn_mask) == "111100"  # cond 5000 > 10 and 5000/λ > 10
    # DCReg on the blocks: rot (150, 1, 5000) → rx (33×), ry weak; trans (200, 50, 1000) → tx (5×) fine, ty weak
    assert bits(rep.mask) == "110010"
    np.testing.assert_allclose(rep.clamped_rot, [500.0, 500.0, 5000.0])
    np.testing.assert_allclose(rep.clamped_trans, [200.0, 100.0, 1000.0])
    np.testing.assert_allclose(np.diag(rep.preconditioner()), 1 / np.array([500, 500, 5000, 200, 100, 1000.0]))
    assert rep.cond_rot == 5000.0 and rep.cond_trans == 20.0


def test_greedy_assignment_reproduces_dcreg_order() -> None:
    # greedy gives x its best mode first; on a well-separated basis both assignments agree
    r = so3_exp(np.array([0.1, -0.2, 0.15]))
    h = np.zeros((6, 6))
    h[:3, :3] = r @ np.diag([10.0, 200.0, 3000.0]) @ r.T
    h[3:, 3:] = np.diag([5.0, 6.0, 7.0])
    greedy, optimal = degeneracy(h, assignment="greedy"), degeneracy(h)
    np.testing.assert_allclose(greedy.eigenvalues_rot, optimal.eigenvalues_rot)
    np.testing.assert_allclose(optimal.eigenvalues_rot, [10.0, 200.0, 3000.0], rtol=1e-12)
    assert bits(optimal.mask) == "110000"
