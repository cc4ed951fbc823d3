"""Local planes of a point cloud from its k nearest neighbours (PCA), with DCReg's radius and thickness rejection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Planes", "estimate_planes"]


@dataclass(frozen=True)
class Planes:
    """One plane ``nᵢᵀ x + dᵢ = 0`` per point of a cloud.

    Attributes:
        normals: ``[M, 3]`` unit normals (the eigenvector of the smallest eigenvalue of the neighbourhood's
            covariance); rows of rejected planes are zero.
        offsets: ``[M]`` ``dᵢ = −nᵢᵀ cᵢ`` (``cᵢ`` the neighbourhood's centroid).
        valid: ``[M]`` the neighbourhood was within ``radius`` and thinner than ``max_thickness``.
    """

    normals: np.ndarray
    offsets: np.ndarray
    valid: np.ndarray


def estimate_planes(
    points: np.ndarray, tree: cKDTree, *, k: int, radius: float | None, max_thickness: float | None
) -> Planes:
    """Fit a plane to each point's ``k`` nearest neighbours (itself included), batched over points.

    A plane is rejected (DCReg, ``search_radius`` 1 m and ``max_plane_thickness`` 0.2 m) when a neighbour lies farther
    than ``radius`` from the point, or some neighbour lies ``≥ max_thickness`` from the fitted plane.
    """
    dist, idx = tree.query(points, k=k)
    nbrs = tree.data[idx]  # [M, k, 3]
    centroid = nbrs.mean(axis=1)
    centred = nbrs - centroid[:, None, :]
    cov = np.einsum("mki,mkj->mij", centred, centred) / k
    _, vec = np.linalg.eigh(cov)
    normals = vec[:, :, 0]
    offsets = -np.einsum("mi,mi->m", normals, centroid)
    valid = np.ones(len(points), dtype=bool)
    if radius is not None:
        valid &= dist[:, -1] <= radius
    if max_thickness is not None:
        thickness = np.abs(np.einsum("mki,mi->mk", centred, normals)).max(axis=1)
        valid &= thickness < max_thickness
    normals = np.where(valid[:, None], normals, 0.0)
    offsets = np.where(valid, offsets, 0.0)
    return Planes(normals, offsets, valid)
