"""Problem generators of the solvers benchmark (and its tests): the Learning-to-Relax sequences, grid Poisson
problems with obstacles for DCDM, tall ill-conditioned least-squares problems."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "HeatSequence",
    "ShiftedSequence",
    "divergence_rhs",
    "fill_pockets",
    "heat_sequence",
    "ill_conditioned",
    "laplacian_2d",
    "obstacle_mask",
    "shifted_laplacian_sequence",
    "truncated_normal",
]


def laplacian_2d(m: int, h: float = 1.0) -> sp.csr_array:
    """The 5-point Laplacian (``4, −1``) on the ``m × m`` interior of a square grid, natural order, divided by
    ``h²`` (MATLAB ``delsq(numgrid('S', m + 2))`` for ``h = 1``)."""
    T = sp.diags_array([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], offsets=[-1, 0, 1])
    eye = sp.eye_array(m)
    return sp.csr_array((sp.kron(eye, T) + sp.kron(T, eye)) / h**2)


def truncated_normal(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """``count`` standard Gaussian vectors in ``R^n`` conditioned on ``‖b‖ ≤ √n`` (rejection, vectorized)."""
    out: list[np.ndarray] = []
    have = 0
    while have < count:
        draw = rng.standard_normal((2 * (count - have) + 16, n))
        keep = draw[np.linalg.norm(draw, axis=1) <= math.sqrt(n)]
        out.append(keep)
        have += keep.shape[0]
    return np.concatenate(out)[:count]


@dataclass(frozen=True)
class ShiftedSequence:
    """Systems ``(K + c_t I) x = b_t`` of Khodak et al.'s synthetic setup."""

    K: sp.csr_array
    shifts: np.ndarray
    b: np.ndarray


def shifted_laplacian_sequence(T: int, variance: str = "high", m: int = 10, seed: int = 0) -> ShiftedSequence:
    """Khodak et al. (ICLR 2024) synthetic sequence: ``K`` the 2-D Laplacian on the 10×10 interior (n = 100),
    ``c_t = −0.15 + 0.6·Beta(0.5, 1.5)`` (``variance="high"``) or ``Beta(2, 6)`` (``"low"``), ``b_t`` truncated
    standard normal."""
    if variance not in ("high", "low"):
        raise ValueError(f"`variance` must be 'high' or 'low', got {variance!r}")
    rng = np.random.default_rng(seed)
    a, b = (0.5, 1.5) if variance == "high" else (2.0, 6.0)
    shifts = -0.15 + 0.6 * rng.beta(a, b, T)
    return ShiftedSequence(laplacian_2d(m), shifts, truncated_normal(rng, T, m * m))


@dataclass(frozen=True)
class HeatSequence:
    """Crank–Nicolson steps ``(I + s_t K) u_{t+1} = b_t`` with ``s_t = ½ κ_t Δt``; ``x0[t]`` is the exact previous
    step (the warm start), ``kappa[t]`` the context."""

    K: sp.csr_array
    scales: np.ndarray
    b: np.ndarray
    x0: np.ndarray
    kappa: np.ndarray


def heat_sequence(T: int, nx: int = 20, dt: float = 1e-3) -> HeatSequence:
    """Khodak et al.'s 2-D heat equation (``h2d.m``): unit square, Dirichlet, ``(nx − 1)²`` unknowns,
    ``κ(t) = max(0.1 sin 2πt, −10 sin 2πt)``, a Gaussian source moving on a circle, Crank–Nicolson with step
    ``dt``; the exact states come from sparse direct solves."""
    import scipy.sparse.linalg as spla

    m = nx - 1
    h = 1.0 / nx
    K = laplacian_2d(m, h)
    grid = np.arange(1, nx) * h
    gx, gy = np.meshgrid(grid, grid, indexing="xy")
    eye = sp.eye_array(m * m, format="csr")
    u = np.zeros(m * m)
    scales, bs, x0s, kappas = [], [], [], []
    for k in range(T):  # time stepping is sequential
        t = (k + 0.5) * dt
        kappa = max(0.1 * math.sin(2 * math.pi * t), -10 * math.sin(2 * math.pi * t))
        cx, cy = 0.5 + 0.25 * math.cos(2 * math.pi * t), 0.5 + 0.25 * math.sin(2 * math.pi * t)
        f = 10.0 * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / 0.02).reshape(-1)
        s = 0.5 * kappa * dt
        rhs = u - s * (K @ u) + dt * f
        scales.append(s)
        bs.append(rhs)
        x0s.append(u)
        kappas.append(kappa)
        u = spla.spsolve(sp.csc_array(eye + s * K), rhs)
    return HeatSequence(K, np.array(scales), np.array(bs), np.array(x0s), np.array(kappas))


def ill_conditioned(
    rows: int, cols: int, cond: float, seed: int = 0, noise: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """A tall ``A = U diag(σ) Vᵀ`` with singular values log-spaced from 1 to ``1/cond`` and
    ``b = A x + noise·N(0, 1)`` (an inconsistent system)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    V, _ = np.linalg.qr(rng.standard_normal((cols, cols)))
    sigma = np.logspace(0, -math.log10(cond), cols)
    A = (U * sigma) @ V.T
    b = A @ rng.standard_normal(cols) + noise * rng.standard_normal(rows)
    return A, b


def fill_pockets(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the fluid cells that do not reach the domain boundary through fluid made solid."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    edge = np.zeros_like(mask)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    out: np.ndarray = mask & np.isin(labels, np.unique(labels[edge & mask]))
    return out


def obstacle_mask(m: int, seed: int = 0, obstacles: int = 6, size: tuple[int, int] = (2, 8)) -> np.ndarray:
    """A fluid mask ``[m, m]`` (True = fluid) with ``obstacles`` random solid rectangles of side lengths in
    ``size`` (in cells, scaled with ``m/32``), trapped pockets filled: the DCDM problems (2-D smoke-like domains
    with solid obstacles)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((m, m), dtype=bool)
    lo, hi = (max(1, round(v * m / 32)) for v in size)
    hs, ws = rng.integers(lo, hi + 1, (2, obstacles))
    i0 = rng.integers(1, m - hs, obstacles)
    j0 = rng.integers(1, m - ws, obstacles)
    for a, b, h, w in zip(i0, j0, hs, ws, strict=True):  # a handful of rectangles
        mask[a : a + h, b : b + w] = False
    return fill_pockets(mask)


def divergence_rhs(mask: np.ndarray, count: int, seed: int = 0, smooth: float = 2.0) -> np.ndarray:
    """Right-hand sides ``[count, n]`` from the physics distribution: the divergence of random smooth velocity
    fields on the MAC grid (faces), zero normal velocity on solid walls, on the fluid cells in row-major order."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    H, W = mask.shape
    u = ndimage.gaussian_filter(rng.standard_normal((count, H, W + 1)), (0, smooth, smooth))
    v = ndimage.gaussian_filter(rng.standard_normal((count, H + 1, W)), (0, smooth, smooth))
    solid = ~mask
    u_wall = np.zeros((H, W + 1), dtype=bool)
    u_wall[:, 1:] |= solid
    u_wall[:, :-1] |= solid
    v_wall = np.zeros((H + 1, W), dtype=bool)
    v_wall[1:, :] |= solid
    v_wall[:-1, :] |= solid
    u[:, u_wall] = 0.0
    v[:, v_wall] = 0.0
    div = u[:, :, 1:] - u[:, :, :-1] + v[:, 1:, :] - v[:, :-1, :]
    out: np.ndarray = div[:, mask]
    return out
