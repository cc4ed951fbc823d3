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
    cov = np.einsum("mki,mkj->mij", centred, centred) / k
    _, vec = np.linalg.eigh(cov)
    normals = vec[:, :, 0]
    offsets = -np.einsum("mi,mi->m", normals, points if offset == "point" else centroid)
    valid = np.ones(len(points), dtype=bool)
    if radius is not None:
        valid &= dist[:, -1] <= radius
    if max_thickness is not None:
        thickness = np.abs(np.einsum("mki,mi->mk", centred, normals)).max(axis=1)
        valid &= thickness < max_thickness
    normals = np.where(valid[:, None], normals, 0.0)
    offsets = np.where(valid, offsets, 0.0)
    return Planes(normals, offsets, valid)
