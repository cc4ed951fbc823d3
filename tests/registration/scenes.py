"""Analytic test scenes: points on planes and cylinders with their exact normals, and each scene's unobservable
point-to-plane motions derived by hand (body frame at the scene origin, mask order [rx, ry, rz, tx, ty, tz]).

For a point p with normal n the Jacobian row is [p × n, n] (identity pose); a motion [ω; v] is unobservable when
every row is orthogonal to it: (p × n)·ω + n·v = n·(ω × p + v) = 0, i.e. the motion slides every point within its
plane (or along its surface).
"""

from __future__ import annotations

import numpy as np

#: grid spacing in metres (isotropic, so that k-nearest-neighbour planes are well defined)
SPACING = 0.25


def span(lo: float, hi: float) -> np.ndarray:
    """Grid coordinates from ``lo`` to ``hi`` at :data:`SPACING` (both ends included)."""
    return np.linspace(lo, hi, round((hi - lo) / SPACING) + 1)


def grid(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(a, b, indexing="ij")
    return u.ravel(), v.ravel()


def plane_z(z: float, half: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    x, y = grid(span(-half, half), span(-half, half))
    pts = np.stack([x, y, np.full_like(x, z)], 1)
    return pts, np.tile([0.0, 0.0, 1.0], (len(pts), 1))


def single_plane() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground plane z = 0: n = e_z, p × n = (p_y, −p_x, 0). Unobservable: tx, ty (n·v = 0) and rz ((p×n)_z = 0)."""
    p, n = plane_z(0.0)
    return p, n, np.array([0, 0, 1, 1, 1, 0], dtype=bool)


def parallel_planes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planes z = ±1 (normals e_z): the same null space as one plane: tx, ty, rz."""
    p1, n1 = plane_z(-1.0)
    p2, n2 = plane_z(1.0)
    return np.vstack([p1, p2]), np.vstack([n1, n2]), np.array([0, 0, 1, 1, 1, 0], dtype=bool)


def corridor(length: float = 5.0, width: float = 1.5, height: float = 3.0) -> tuple[np.ndarray, ...]:
    """Walls y = ±width (normals e_y) and floor z = 0 (e_z) along x ∈ [−length, length]. No normal has an x
    component, so tx is unobservable; walls give (p × e_y) = (−z, 0, x) → rx, rz; the floor (y, −x, 0) → rx, ry."""
    x, z = grid(span(-length, length), span(0.0, height))
    walls = [np.stack([x, np.full_like(x, s * width), z], 1) for s in (-1, 1)]
    xf, yf = grid(span(-length, length), span(-width + SPACING, width - SPACING))
    floor = np.stack([xf, yf, np.zeros_like(xf)], 1)
    pts = np.vstack([*walls, floor])
    normals = np.vstack([np.tile([0.0, 1.0, 0.0], (2 * len(x), 1)), np.tile([0.0, 0.0, 1.0], (len(xf), 1))])
    return pts, normals, np.array([0, 0, 0, 1, 0, 0], dtype=bool)


def cylinder(
    radius: float = 2.0, centre: tuple[float, float] = (0.0, 0.0), half: float = 5.0
) -> tuple[np.ndarray, ...]:
    """Tunnel x² + y² = r² (axis z through ``centre``), radial normals n = (cosθ, sinθ, 0). n·e_z = 0 → tz;
    rotating about the axis slides the surface into itself: ω = e_z with v = c × e_z (zero for c = 0) → rz."""
    count = round(2 * np.pi * radius / SPACING)
    th, z = grid(np.linspace(0, 2 * np.pi, count, endpoint=False), span(-half, half))
    normals = np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], 1)
    pts = np.stack([centre[0] + radius * np.cos(th), centre[1] + radius * np.sin(th), z], 1)
    return pts, normals, np.array([0, 0, 1, 0, 0, 1], dtype=bool)


def room() -> tuple[np.ndarray, ...]:
    """The six faces of the box [−4, 5] × [−3, 3.5] × [0, 3], sensor off centre: every motion moves some face."""
    lo, hi = np.array([-4.0, -3.0, 0.0]), np.array([5.0, 3.5, 3.0])
    pts, normals = [], []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        # faces own their edges in turn (x faces whole, y faces without x edges, z faces interior only)
        trim = [SPACING if a < axis else 0.0 for a in others]
        u, v = grid(
            span(lo[others[0]] + trim[0], hi[others[0]] - trim[0]),
            span(lo[others[1]] + trim[1], hi[others[1]] - trim[1]),
        )
        for side in (lo[axis], hi[axis]):
            p = np.zeros((len(u), 3))
            p[:, others[0]], p[:, others[1]], p[:, axis] = u, v, side
            n = np.zeros(3)
            n[axis] = 1.0
            pts.append(p)
            normals.append(np.tile(n, (len(u), 1)))
    return np.vstack(pts), np.vstack(normals), np.zeros(6, dtype=bool)


def hessian(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """H = Σ [p × n; n][p × n; n]ᵀ at the identity pose, written out independently of the package."""
    j = np.hstack([np.cross(points, normals), normals])
    return j.T @ j


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


SCENES = {
    "single_plane": single_plane,
    "parallel_planes": parallel_planes,
    "corridor": corridor,
    "cylinder": cylinder,
    "shifted_cylinder": lambda: cylinder(3.0, (0.8, 0.3)),
    "room": room,
}
