"""Incomplete Cholesky with zero fill, IC(0), for sparse SPD matrices whose graph has no triangles (5-point and
7-point grid Laplacians, any bipartite stencil), as a CG preconditioner.

For ``A = L + D + Lᵀ`` (``L`` strictly lower) IC(0) is ``M = (Δ + L) Δ⁻¹ (Δ + Lᵀ)`` with the diagonal recurrence
``Δ_i = a_ii − Σ_{k<i, a_ik≠0} a_ik² / Δ_k`` (Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., §10.3.2,
eq. 10.31–10.34 for the 5-point matrix): when no two lower neighbours of a row are coupled, every update of an
off-diagonal entry would land outside the sparsity pattern and is dropped, so IC(0) only changes the diagonal.
The recurrence runs level by level (rows of one level depend only on earlier levels), one sparse product each;
applying ``M⁻¹`` is two level-scheduled triangular solves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from precond.linalg._sparse import LevelSolver, as_csr, check_spd_cheap, levels

__all__ = ["IC0", "ic0"]


class IC0:
    """The IC(0) factor of an SPD ``A`` (see the module docstring): ``pivots`` ``Δ``, :meth:`solve` applies
    ``M⁻¹``, :meth:`matrix` gives ``M`` (for tests)."""

    def __init__(self, lower: sp.csr_array, pivots: np.ndarray, level_of: np.ndarray) -> None:
        self.L = lower
        self.pivots = pivots
        self._lower = LevelSolver(lower, lower=True, level_of=level_of)
        upper = sp.csr_array(lower.T)
        depth = int(level_of.max()) if level_of.size else 0
        self._upper = LevelSolver(upper, lower=False, level_of=depth - level_of)

    @property
    def n(self) -> int:
        return int(self.pivots.size)

    def solve(self, r: np.ndarray) -> np.ndarray:
        """``M⁻¹ r = (Δ + Lᵀ)⁻¹ Δ (Δ + L)⁻¹ r`` for ``r`` of shape ``[n]`` or ``[n, B]``."""
        r = np.asarray(r, dtype=np.float64)
        if r.ndim not in (1, 2) or r.shape[0] != self.n or not np.isfinite(r).all():
            raise ValueError(f"`r` must be finite with shape [{self.n}] or [{self.n}, B], got shape {r.shape}")
        vec = r.ndim == 1
        R = r[:, None] if vec else r
        d = self.pivots[:, None]
        Y = self._lower.solve(R, d)
        Z = self._upper.solve(d * Y, d)
        return Z[:, 0] if vec else Z

    def matrix(self) -> sp.csr_array:
        """``M = (Δ + L) Δ⁻¹ (Δ + Lᵀ)`` as a sparse matrix."""
        F = sp.csr_array(sp.diags_array(self.pivots) + self.L)
        return sp.csr_array(F @ sp.diags_array(1 / self.pivots) @ F.T)


def ic0(A: Any) -> IC0:
    """IC(0) of a sparse symmetric positive definite ``A`` (SciPy, NumPy or torch) whose graph has no triangles.

    Raises ``ValueError`` if ``A`` is not symmetric with a positive diagonal, if two lower neighbours of a row
    are coupled (then IC(0) also changes off-diagonal entries; this routine does not cover that), or if a pivot
    ``Δ_i ≤ 0`` (IC(0) breaks down: ``A`` is not an M-matrix-like SPD matrix; use Jacobi or AMG instead).
    """
    M = as_csr(A)
    diag = check_spd_cheap(M)
    L = sp.csr_array(sp.tril(M, k=-1))
    L.eliminate_zeros()
    pattern = sp.csr_array((np.ones(L.nnz), L.indices, L.indptr), shape=L.shape)
    if (pattern @ pattern).multiply(pattern).nnz:
        raise ValueError(
            "`A`'s graph has triangles (a row with two coupled lower neighbours): this IC(0) covers triangle-free "
            "stencils (5-/7-point grids); use pyamg or another preconditioner for this matrix"
        )
    lev = levels(L)
    level_of = np.arange(M.shape[0]) if lev is None else lev
    order = np.argsort(level_of, kind="stable")
    bounds = np.searchsorted(level_of[order], np.arange(int(level_of.max()) + 2))
    sq = L.multiply(L).tocsr()
    inv = np.zeros(M.shape[0])
    pivots = np.array(diag, dtype=np.float64)
    for k in range(len(bounds) - 1):  # levels are sequential; each is one sparse product over its rows
        rows = order[bounds[k] : bounds[k + 1]]
        if rows.size == 0:
            continue
        pivots[rows] = diag[rows] - sq[rows] @ inv
        if not (pivots[rows] > 0).all():
            i = int(rows[np.argmin(pivots[rows])])
            raise ValueError(f"IC(0) broke down: pivot {i} is {pivots[i]:.3g} ≤ 0; `A` is not suitable for IC(0)")
        inv[rows] = 1.0 / pivots[rows]
    return IC0(L, pivots, level_of)
