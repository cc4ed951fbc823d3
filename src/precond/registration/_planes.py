"""Local planes of a point cloud from its k nearest neighbours (PCA), with DCReg's radius and thickness rejection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Planes", "estimate_planes", "smallest_eigenvectors"]


@dataclass(frozen=True)
class Planes:
    """One plane ``nᵢᵀ x + dᵢ = 0`` per point of a cloud.

    Attributes:
        normals: ``[M, 3]`` unit normals (the eigenvector of the smallest eigenvalue of the neighbourhood's
            covariance); rows of rejected planes are zero.
        offsets: ``[M]`` ``dᵢ = −nᵢᵀ xᵢ``: the plane through the point ``xᵢ`` itself (``offset="point"``) or
            through its neighbourhood's centroid ``cᵢ`` (``offset="fit"``).
        valid: ``[M]`` the neighbourhood was within ``radius`` and thinner than ``max_thickness``.
    """

    normals: np.ndarray
    offsets: np.ndarray
    valid: np.ndarray


def estimate_planes(
    points: np.ndarray,
    tree: cKDTree,
    *,
    k: int,
    radius: float | None,
    max_thickness: float | None,
    offset: str = "point",
) -> Planes:
    """Fit a plane to each point's ``k`` nearest neighbours (itself included), batched over points.

    A plane is rejected (DCReg, ``search_radius`` 1 m and ``max_plane_thickness`` 0.2 m) when a neighbour lies farther
    than ``radius`` from the point, or some neighbour lies ``≥ max_thickness`` from the fitted plane.

    ``offset="point"`` places the plane through the point itself (Open3D's and small_gicp's point-to-plane residual
    ``nᵢᵀ(T p − qᵢ)``); ``"fit"`` through the neighbourhood's centroid (DCReg's least-squares plane). The fitted
    offset is biased wherever a neighbourhood straddles an edge (the centroid leaves both surfaces): a point then
    lies off its own plane, so even registering a cloud to itself settles away from the truth (measured: 7e-3 m on
    the README corridor, 2.6e-2 on a 1k-point room). Through the point, a point matched to itself has residual zero
    whatever its normal, and a noise-free copy is recovered exactly.
    """
    dist, idx = tree.query(points, k=k)
    nbrs = tree.data[idx]  # [M, k, 3]
    centroid = nbrs.mean(axis=1)
    centred = nbrs - centroid[:, None, :]
    normals = smallest_eigenvectors(_covariances(centred) / k)
    offsets = -np.einsum("mi,mi->m", normals, points if offset == "point" else centroid)
    valid = np.ones(len(points), dtype=bool)
    if radius is not None:
        valid &= dist[:, -1] <= radius
    if max_thickness is not None:
        thickness = np.abs(centred @ normals[:, :, None])[:, :, 0].max(axis=1)
        valid &= thickness < max_thickness
    normals = np.where(valid[:, None], normals, 0.0)
    offsets = np.where(valid, offsets, 0.0)
    return Planes(normals, offsets, valid)


def _covariances(centred: np.ndarray) -> np.ndarray:
    """``Σ_k cᵢₖ cᵢₖᵀ`` ``[M, 3, 3]`` of centred neighbourhoods ``[M, k, 3]``: six products summed over ``k``."""
    x, y, z = centred[..., 0], centred[..., 1], centred[..., 2]
    xx, yy, zz = (x * x).sum(1), (y * y).sum(1), (z * z).sum(1)
    xy, xz, yz = (x * y).sum(1), (x * z).sum(1), (y * z).sum(1)
    return np.stack([xx, xy, xz, xy, yy, yz, xz, yz, zz], axis=1).reshape(-1, 3, 3)


#: Eigenvalue gaps below this share of ``‖A‖`` leave the cross-product normal ill-determined: such members (lines,
#: blobs) go to LAPACK's ``eigh`` instead.
_GAP_RTOL = 1e-6


def smallest_eigenvectors(a: np.ndarray) -> np.ndarray:
    """Unit eigenvectors of the smallest eigenvalue of symmetric ``[M, 3, 3]`` matrices, vectorized in closed form.

    The smallest eigenvalue by the trigonometric solution of the characteristic cubic (Smith, CACM 1961), then the
    eigenvector as the longest cross product of two rows of ``A − λ_min I`` (its rows span the orthogonal
    complement of the eigenvector when ``λ_min`` is simple).  Members whose smallest eigenvalue is not separated
    from the middle one by ``_GAP_RTOL · ‖A‖`` (the eigenvector is then not unique: a line or an isotropic blob)
    use ``numpy.linalg.eigh``.  Signs are arbitrary, as LAPACK's.
    """
    a = np.asarray(a, dtype=np.float64)
    q = np.trace(a, axis1=1, axis2=2) / 3.0
    off = a[:, 0, 1] ** 2 + a[:, 0, 2] ** 2 + a[:, 1, 2] ** 2
    diag = a.diagonal(axis1=1, axis2=2) - q[:, None]
    p = np.sqrt(((diag**2).sum(1) + 2.0 * off) / 6.0)
    safe = np.where(p > 0, p, 1.0)
    b = (a - q[:, None, None] * np.eye(3)) / safe[:, None, None]
    det = (
        b[:, 0, 0] * (b[:, 1, 1] * b[:, 2, 2] - b[:, 1, 2] * b[:, 2, 1])
        - b[:, 0, 1] * (b[:, 1, 0] * b[:, 2, 2] - b[:, 1, 2] * b[:, 2, 0])
        + b[:, 0, 2] * (b[:, 1, 0] * b[:, 2, 1] - b[:, 1, 1] * b[:, 2, 0])
    )
    r = np.clip(det / 2.0, -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    lam_min = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    lam_mid = 3.0 * q - lam_min - (q + 2.0 * p * np.cos(phi))
    m = a - lam_min[:, None, None] * np.eye(3)
    crosses = np.stack([_cross(m[:, 0], m[:, 1]), _cross(m[:, 0], m[:, 2]), _cross(m[:, 1], m[:, 2])], 1)
    norms = np.linalg.norm(crosses, axis=2)
    best = norms.argmax(1)
    rows = np.arange(len(a))
    vec = crosses[rows, best] / np.maximum(norms[rows, best], 1e-300)[:, None]
    scale = np.abs(a).reshape(len(a), -1).max(1)
    unclear = (lam_mid - lam_min <= _GAP_RTOL * scale) | ~np.isfinite(vec).all(1)
    if unclear.any():
        vec[unclear] = np.linalg.eigh(a[unclear])[1][:, :, 0]
    return vec


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise ``u × v`` of ``[M, 3]`` arrays (``np.cross`` without its axis handling)."""
    x = u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1]
    y = u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2]
    return np.stack([x, y, u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], axis=1)
