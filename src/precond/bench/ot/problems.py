"""The entropic OT benchmark's problems (seeded, deterministic, costs normalized to max 1), grids and error.

* ``assignment``: random assignment, ``M_ij ~ U[0, 1]`` (the SNS paper's first case);
* ``gauss``: two Gaussian point clouds in 2-D (``N(0, I)`` and ``N((1, 1), I)``), squared Euclidean cost;
* ``density1d_w1`` / ``density1d_w2``: two Gaussian-mixture densities on a regular 1-D grid of n points,
  ``|x − y|`` / ``|x − y|²`` costs;
* ``density2d_w2``: two Gaussian-mixture densities on a ``k × k`` grid, ``k = ⌊√n⌋`` (so ``k²`` points, e.g.
  1936 for n = 2000), squared Euclidean cost.

Weights are uniform unless stated. The reported error is ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` (:func:`l1_error`); a method
reaches the target when it is ``≤ TARGET``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["FULL", "KINDS", "QUICK", "TARGET", "Problem", "l1_error", "make_problem", "select_problems"]

#: L1 marginal error every method must reach.
TARGET = 1e-8
KINDS = ("assignment", "gauss", "density1d_w1", "density1d_w2", "density2d_w2")
#: ``(kind, n, ε)``
Problem = tuple[str, int, float]
FULL: list[Problem] = [(k, 2000, eps) for k in KINDS for eps in (1e-1, 1e-2, 1e-3)] + [
    (k, n, 1e-2) for k in ("assignment", "gauss") for n in (500, 5000)
]
QUICK: list[Problem] = [(k, 500, eps) for k in ("assignment", "gauss", "density1d_w2") for eps in (1e-2, 1e-3)]


def _dist(x: np.ndarray, y: np.ndarray, metric: str = "sqeuclidean") -> np.ndarray:
    """Pairwise (squared) Euclidean distances, one coordinate at a time (exact, no ``|x|² + |y|² − 2xy``)."""
    d2 = np.zeros((len(x), len(y)))
    for k in range(x.shape[1]):
        diff = np.subtract.outer(x[:, k], y[:, k])
        np.square(diff, out=diff)
        d2 += diff
    return np.sqrt(d2) if metric == "euclidean" else d2


def _mixture(x: np.ndarray, centers: list[tuple[float, ...]], scale: float) -> np.ndarray:
    d = np.zeros(len(x))
    for c in centers:
        d += np.exp(-((x - np.asarray(c)) ** 2).sum(1) / (2 * scale**2))
    d += 1e-3 * d.max()  # full support
    return d / d.sum()


def make_problem(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, M)`` of problem ``kind`` with n points (``⌊√n⌋²`` for ``density2d_w2``), ``max M = 1``."""
    rng = np.random.default_rng(seed)
    if kind == "assignment":
        a = b = np.full(n, 1.0 / n)
        M = rng.random((n, n))
    elif kind == "gauss":
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 1.0
        a = b = np.full(n, 1.0 / n)
        M = _dist(x, y)
    elif kind in ("density1d_w1", "density1d_w2"):
        x = np.linspace(0, 1, n)[:, None]
        a = _mixture(x, [(0.2,), (0.5,)], 0.07)
        b = _mixture(x, [(0.4,), (0.8,)], 0.1)
        M = _dist(x, x, "euclidean" if kind.endswith("w1") else "sqeuclidean")
    elif kind == "density2d_w2":
        k = math.isqrt(n)
        g = np.linspace(0, 1, k)
        x = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        a = _mixture(x, [(0.25, 0.3), (0.6, 0.7)], 0.12)
        b = _mixture(x, [(0.7, 0.3), (0.3, 0.75)], 0.15)
        M = _dist(x, x)
    else:
        raise ValueError(f"unknown problem kind {kind!r}; choose from {', '.join(KINDS)}")
    return a, b, M / M.max()


def l1_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁``; ``inf`` for a plan with NaN or inf entries (e.g. an underflowed Sinkhorn)."""
    if not np.isfinite(plan).all():
        return math.inf
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


def select_problems(
    quick: bool, kinds: Sequence[str] | None = None, ns: Sequence[int] | None = None, eps: Sequence[float] | None = None
) -> list[Problem]:
    """The preset grid restricted to ``kinds``, with every n replaced by ``ns`` and every ε by ``eps`` (deduped,
    in the grid's order).  A kind that the preset lacks gets the (n, ε) pairs of the preset's first kind.
    """
    base = QUICK if quick else FULL
    present = {k for k, _, _ in base}
    chosen = set(kinds) if kinds else present
    entries = [p for p in base if p[0] in chosen]
    for kind in dict.fromkeys(kinds or ()):
        if kind not in present:
            entries += [(kind, n, e) for k, n, e in base if k == base[0][0]]
    grid: list[Problem] = []
    for kind, n, e in entries:
        for n2 in ns or (n,):
            for e2 in eps or (e,):
                if (kind, n2, e2) not in grid:
                    grid.append((kind, n2, e2))
    return grid
