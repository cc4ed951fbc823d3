"""Plane fitting: the closed-form smallest eigenvector against LAPACK's ``eigh`` (the oracle), on the
neighbourhoods registration meets (noisy and exact planes, lines, blobs, axis-aligned and degenerate matrices)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from precond.registration._planes import estimate_planes, smallest_eigenvectors


def _neighbourhood_covariances(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 10, 3))
    if kind == "noisy plane":
        x[..., 2] *= 1e-3
    elif kind == "exact plane":
        x[..., 2] = 0.0
    elif kind == "line":
        x[..., 1:] *= 1e-4
    elif kind == "thin slab":
        x[..., 2] *= 1e-7
    rot = np.linalg.qr(rng.normal(size=(n, 3, 3)))[0]
    x = x @ rot
    x -= x.mean(1, keepdims=True)
    return np.einsum("mki,mkj->mij", x, x) / 10


@pytest.mark.parametrize("kind", ["noisy plane", "exact plane", "line", "blob", "thin slab"])
def test_smallest_eigenvector_matches_eigh(kind: str) -> None:
    a = _neighbourhood_covariances(kind, 2000, np.random.default_rng(0))
    lam, vec = np.linalg.eigh(a)
    got = smallest_eigenvectors(a)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-12)
    scale = np.abs(a).reshape(len(a), -1).max(1)
    resid = np.linalg.norm(np.einsum("mij,mj->mi", a, got) - lam[:, :1] * got, axis=1)
    assert float((resid / scale).max()) < 1e-12  # an eigenvector of the smallest eigenvalue
    if kind != "line":  # a line's two small eigenvalues are nearly equal: any vector of their plane is right
        np.testing.assert_allclose(np.abs((got * vec[:, :, 0]).sum(1)), 1.0, atol=1e-9)


def test_smallest_eigenvector_special_matrices() -> None:
    a = np.stack([np.diag([3.0, 1.0, 2.0]), np.zeros((3, 3)), np.eye(3), np.diag([1.0, 1.0, 0.0])])
    got = smallest_eigenvectors(a)
    np.testing.assert_allclose(np.abs(got[0]), [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(got[3]), [0.0, 0.0, 1.0], atol=1e-12)
    assert np.isfinite(got).all() and np.allclose(np.linalg.norm(got, axis=1), 1.0)  # zero and isotropic: any unit


def test_planes_of_a_noise_free_box_face_are_its_normal() -> None:
    g = np.linspace(-1, 1, 21)
    xx, yy = np.meshgrid(g, g)
    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    pts = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], 1) @ rot
    planes = estimate_planes(pts, cKDTree(pts), k=10, radius=None, max_thickness=0.2)
    expected = np.cross(pts[1] - pts[0], pts[21] - pts[0])
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(np.abs(planes.normals @ expected), 1.0, atol=1e-10)
    np.testing.assert_allclose(planes.offsets, -(pts @ planes.normals.T).diagonal(), atol=1e-12)
    assert planes.valid.all()
