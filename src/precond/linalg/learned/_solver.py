"""The deep conjugate direction method (Kaneda et al., ICML 2023, Algorithm 1; the authors' ``dcdm()``).

``q = f_θ(r/‖r‖)``, A-orthogonalized against the last two directions, an exact line search along ``q`` and the
residual recomputed as ``b − A x``.  Every step minimizes the A-norm error along its direction, so that error
never increases; there is no finite-termination guarantee (the direction map is nonlinear).  The outer
iteration is float64, the network float32 (as the authors run it).

Safeguard (ours, ``fallback=True``, the default): a network used off its training distribution (another grid size,
an unusual right-hand side) can return directions that no longer reduce the error, and the authors' loop then
stalls until ``max_iter``.  Each step also forms the residual, A-orthogonalized against the same two directions
(for exact arithmetic, CG's direction when the previous steps were CG's), and takes whichever of the two
reduces the A-norm error more (the reduction of an exact line search along ``d`` is ``(dᵀr)²/dᵀAd``, known before
stepping); one extra sparse matrix-vector product per step.  The count is in ``DCDMResult.fallbacks``; with
``fallback=False`` the loop is the authors'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from precond.linalg._sparse import as_csr, as_rhs, check_spd_cheap
from precond.linalg.learned._grid import PoissonGrid
from precond.linalg.learned._net import DirectionNet

__all__ = ["DCDMResult", "dcdm"]

DCDMStatus = Literal["converged", "max_iter", "breakdown", "nonfinite"]


@dataclass(frozen=True)
class DCDMResult:
    """Outcome of :func:`dcdm`: ``solution [n]``, iterations (network applications), final relative residual
    ``‖b − A x‖/‖b‖``, its history (``iterations + 1`` values), status (``breakdown``: a direction with
    ``qᵀAq ≤ 0`` after orthogonalization) and ``fallbacks``: steps that took the orthogonalized residual instead
    of the network's direction."""

    solution: np.ndarray
    iterations: int
    residual_norm: float
    history: tuple[float, ...]
    status: DCDMStatus
    fallbacks: int = 0

    @property
    def converged(self) -> bool:
        return self.status == "converged"


def dcdm(
    A: Any,
    b: Any,
    net: DirectionNet,
    grid: PoissonGrid,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    x0: Any = None,
    callback: Callable[[np.ndarray], None] | None = None,
    fallback: bool = True,
) -> DCDMResult:
    """Solve the SPD ``A x = b`` whose unknowns are the fluid cells of ``grid`` with the direction network.

    Args:
        A: ``[n, n]`` sparse SPD (usually ``grid.matrix()``; any SPD matrix on those cells works).
        b: ``[n]``; net: a trained :class:`DirectionNet`; grid: gives the cell layout and the mask.
        tol: stop when ``‖b − A x‖₂ ≤ tol·‖b‖₂``; max_iter: cap; x0: start (default zero).
        callback: called with each iterate ``x`` (a copy), e.g. to record errors.
        fallback: take the orthogonalized residual when it reduces the error more than the network's direction
            (module docstring); ``False``: the authors' loop.
    """
    if not isinstance(grid, PoissonGrid):
        raise TypeError(f"`grid` must be a PoissonGrid, got {type(grid).__name__}")
    M = as_csr(A)
    check_spd_cheap(M)
    if M.shape[0] != grid.n:
        raise ValueError(f"`A` has {M.shape[0]} unknowns but `grid` has {grid.n} fluid cells; they must match")
    if not isinstance(net, DirectionNet):
        raise TypeError(f"`net` must be a DirectionNet, got {type(net).__name__}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"`tol` must be finite and ≥ 0, got {tol}")
    if not isinstance(fallback, bool):
        raise TypeError(f"`fallback` must be a bool, got {type(fallback).__name__}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"`max_iter` must be an integer ≥ 0, got {max_iter!r}")
    bv = as_rhs(b, grid.n, "b")
    x = np.zeros_like(bv) if x0 is None else as_rhs(x0, grid.n, "x0").copy()
    bn = float(np.linalg.norm(bv))
    r = bv - M @ x
    mask = torch.from_numpy(grid.mask)[None, None]
    dirs: list[tuple[np.ndarray, np.ndarray, float]] = []  # the last two (p, A p, pᵀ A p)
    hist = [float(np.linalg.norm(r)) / bn if bn > 0 else 0.0]
    status: DCDMStatus = "max_iter"
    k = used_fallback = 0
    with torch.no_grad():
        while True:
            rel = hist[-1]
            if not math.isfinite(rel):
                status = "nonfinite"
                break
            if rel <= tol:
                status = "converged"
                break
            if k >= max_iter:
                break
            rn = float(np.linalg.norm(r))
            inp = grid.to_grid(torch.from_numpy(r / rn).to(torch.float32))
            q = _orthogonalized(grid.from_grid(net(inp, mask))[0].double().numpy(), dirs)
            Aq = M @ q
            qAq = float(q @ Aq)
            if fallback:
                d = _orthogonalized(r, dirs)
                Ad = M @ d
                dAd = float(d @ Ad)
                if dAd > 0 and (not qAq > 0 or float(d @ r) ** 2 * qAq > float(q @ r) ** 2 * dAd):
                    q, Aq, qAq = d, Ad, dAd
                    used_fallback += 1
            if not (qAq > 0 and math.isfinite(qAq)):
                status = "breakdown" if math.isfinite(qAq) else "nonfinite"
                break
            alpha = float(q @ r) / qAq
            x = x + alpha * q
            r = bv - M @ x
            dirs = [*dirs[-1:], (q, Aq, qAq)]
            k += 1
            hist.append(float(np.linalg.norm(r)) / bn)
            if callback is not None:
                callback(x.copy())
    return DCDMResult(x, k, hist[-1], tuple(hist), status, used_fallback)


def _orthogonalized(q: np.ndarray, dirs: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """``q`` A-orthogonalized against each ``(p, A p, pᵀ A p)`` in ``dirs``."""
    for p, Ap, pAp in dirs:
        q = q - p * (float(q @ Ap) / pAp)
    return q
