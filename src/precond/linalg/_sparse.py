"""Sparse-matrix input checks and a vectorized (level-scheduled) triangular solve for the stationary solvers.

Inputs may be SciPy sparse matrices/arrays, NumPy arrays or torch tensors (dense or sparse); everything is turned
into a float64 CSR array once.  The triangular solve groups the rows of a triangular matrix into *levels*
(Anderson–Saad 1989, "level scheduling"): the rows of one level depend only on earlier levels, so each level is one
sparse-times-dense product over all its rows and all right-hand sides at once.  A 2-D grid in natural order has
``nx + ny − 1`` levels, so a sweep costs that many vectorized steps instead of one step per row; for matrices whose
dependency chain is long (a 1-D chain has ``n`` levels) SciPy's compiled SuperLU triangular solve is used instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = ["LevelSolver", "as_csr", "as_rhs", "check_spd_cheap", "from_numpy_like"]

#: Relative asymmetry ``max|A − Aᵀ| / max|A|`` above which an "SPD" input is rejected.
SYMMETRY_RTOL = 1e-10
#: A triangular matrix with more levels than this uses SuperLU's sequential solve (single right-hand side only).
MAX_LEVELS = 1024


def as_csr(A: Any, name: str = "A", *, square: bool = True) -> sp.csr_array:
    """``A`` (SciPy sparse, NumPy, torch dense or sparse) as a float64 CSR array with sorted, summed indices;
    ``ValueError`` naming ``name`` if it is not 2-D, not square (``square=True``), empty or not finite."""
    if isinstance(A, torch.Tensor):
        t = A.detach().cpu()
        if t.layout != torch.strided:
            t = t.to_sparse_coo().coalesce()
            idx = t.indices().numpy()
            A = sp.coo_array((t.values().numpy().astype(np.float64), (idx[0], idx[1])), shape=tuple(t.shape))
        else:
            A = t.numpy()
    if sp.issparse(A):
        M = sp.csr_array(A, dtype=np.float64)
    else:
        try:
            arr = np.asarray(A, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`{name}` must be a SciPy sparse matrix, NumPy array or torch tensor: {err}") from err
        if arr.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D matrix, got an array of shape {arr.shape}")
        M = sp.csr_array(arr)
    if M.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D matrix, got shape {M.shape}")
    if square and M.shape[0] != M.shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {M.shape}; for a rectangular system use lstsq")
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {M.shape})")
    M.sum_duplicates()
    M.sort_indices()
    if not np.isfinite(M.data).all():
        raise ValueError(f"`{name}` has NaN or infinite entries; clean or drop them before solving")
    return M


def check_spd_cheap(A: sp.csr_array, name: str = "A") -> np.ndarray:
    """Reject ``A`` that is visibly not symmetric positive definite, in ``O(nnz)``: asymmetric beyond
    :data:`SYMMETRY_RTOL`, or a diagonal entry ``≤ 0``.  Returns the diagonal."""
    scale = float(np.abs(A.data).max()) if A.nnz else 0.0
    asym = A - A.T
    if asym.nnz and float(np.abs(asym.data).max()) > SYMMETRY_RTOL * max(scale, 1e-300):
        raise ValueError(
            f"`{name}` must be symmetric (SPD is required), but max|A − Aᵀ| = {np.abs(asym.data).max():.3g} "
            f"(max|A| = {scale:.3g}); symmetrize it, e.g. (A + A.T) / 2, if that is what you mean"
        )
    diag = A.diagonal()
    if not (diag > 0).all():
        i = int(np.argmin(diag))
        raise ValueError(
            f"`{name}` must be positive definite, but its diagonal entry {i} is {diag[i]:.3g} ≤ 0; "
            "SOR/SSOR need a positive diagonal"
        )
    return np.asarray(diag)


def as_rhs(b: Any, n: int, name: str = "b", *, batch: bool = False) -> np.ndarray:
    """``b`` as float64 ``[n]`` (or ``[B, n]`` with ``batch=True``; a ``[n]`` input becomes ``[1, n]``)."""
    if isinstance(b, torch.Tensor):
        b = b.detach().cpu().numpy()
    try:
        arr = np.array(b, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a NumPy array or torch tensor of numbers: {err}") from err
    if batch and arr.ndim == 1:
        arr = arr[None, :]
    want = 2 if batch else 1
    if arr.ndim != want or arr.shape[-1] != n:
        shape = f"[B, {n}]" if batch else f"[{n}]"
        raise ValueError(f"`{name}` must have shape {shape} to match A ({n} unknowns), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` has NaN or infinite entries")
    return arr


def from_numpy_like(x: np.ndarray, like: Any) -> Any:
    """``x`` as a torch tensor (on ``like``'s device, float64) if ``like`` is one, else the NumPy array."""
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(x)).to(like.device)
    return x


def levels(T: sp.csr_array) -> np.ndarray | None:
    """Level of each row of the strictly triangular ``T`` (row ``i`` depends on the rows of its nonzero columns),
    or ``None`` if there are more than :data:`MAX_LEVELS` levels.  One vectorized relaxation per level."""
    n = T.shape[0]
    level = np.zeros(n, dtype=np.int64)
    counts = np.diff(T.indptr)
    rows = np.flatnonzero(counts)
    if rows.size == 0:
        return level
    starts = T.indptr[:-1][rows]
    for _ in range(MAX_LEVELS + 1):
        new = level.copy()
        new[rows] = np.maximum.reduceat(level[T.indices], starts) + 1
        if np.array_equal(new, level):
            return level
        level = new
    return None


class LevelSolver:
    """Solve ``(diag(d_j) + s_j T) x_j = r_j`` for a strictly triangular sparse ``T`` and many right-hand sides
    ``j`` at once, each with its own diagonal ``d_j`` and scale ``s_j``.

    ``T`` is fixed (built once); ``solve(r, d, s)`` takes ``r [n, B]``, ``d [n, B]`` (or ``[n, 1]``) and ``s``
    ``[B]`` (or a scalar), all float64.  The rows are stored level by level (a topological order of ``T``'s
    dependencies), each level's couplings padded to its widest row (ELLPACK), so a level is one gather and one
    multiply-add over all its rows and right-hand sides.  Long dependency chains (more than :data:`MAX_LEVELS`
    levels) use SciPy's compiled SuperLU triangular solve per right-hand side instead.
    """

    def __init__(self, T: sp.csr_array, lower: bool, level_of: np.ndarray | None = None) -> None:
        self.n = T.shape[0]
        self.lower = lower
        T = sp.csr_array(T, copy=True)
        T.eliminate_zeros()  # a stored zero must not couple to a not-yet-solved entry
        self.T = T
        level = levels(T) if level_of is None else level_of
        self.blocks: list[tuple[int, int, np.ndarray, np.ndarray]] | None = None
        if level is None:
            return
        order = np.argsort(level, kind="stable")
        self.order = order
        ident = np.arange(self.n)
        self.view: slice | None = None  # the order as a view: identity or reversal (no gathers)
        if np.array_equal(order, ident):
            self.view = slice(None)
        elif np.array_equal(order, ident[::-1]):
            self.view = slice(None, None, -1)
        bounds = np.searchsorted(level[order], np.arange(int(level.max()) + 2))
        P = sp.csr_array(T[order][:, order])  # rows and columns in level order: couplings point to earlier levels
        counts = np.diff(P.indptr)
        self.blocks = []
        for k in range(len(bounds) - 1):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            width = int(counts[lo:hi].max()) if hi > lo else 0
            cols = np.zeros((hi - lo, width), dtype=np.int64)
            vals = np.zeros((hi - lo, width))
            if width:
                rows = np.repeat(np.arange(hi - lo), counts[lo:hi])
                first = P.indptr[lo:hi]
                slot = np.arange(P.indptr[hi] - P.indptr[lo]) - np.repeat(first - P.indptr[lo], counts[lo:hi])
                cols[rows, slot] = P.indices[P.indptr[lo] : P.indptr[hi]]
                vals[rows, slot] = P.data[P.indptr[lo] : P.indptr[hi]]
            self.blocks.append((lo, hi, cols, vals))

    @property
    def n_levels(self) -> int:
        """Levels of the schedule (``0`` when SuperLU's sequential solve is used)."""
        return 0 if self.blocks is None else len(self.blocks)

    def solve(self, r: np.ndarray, d: np.ndarray, s: np.ndarray | float = 1.0) -> np.ndarray:
        s_row = np.broadcast_to(np.asarray(s, dtype=np.float64), (r.shape[1],))
        d = np.broadcast_to(d, r.shape)
        if self.blocks is None:
            return self._solve_sequential(r, d, s_row)
        v = self.view
        rp = r[self.order] if v is None else r[v]
        dp = d[self.order] if v is None else d[v]
        x = np.empty_like(rp)
        for lo, hi, cols, vals in self.blocks:
            acc = rp[lo:hi]
            if cols.shape[1]:
                coupling = vals[:, 0, None] * x[cols[:, 0]]
                for k in range(1, cols.shape[1]):  # the few couplings of a row (2 on a 5-point grid)
                    coupling += vals[:, k, None] * x[cols[:, k]]
                acc = acc - s_row * coupling
            x[lo:hi] = acc / dp[lo:hi]
        if v is not None:
            return x[v]
        out = np.empty_like(x)
        out[self.order] = x
        return out

    def _solve_sequential(self, r: np.ndarray, d: np.ndarray, s: np.ndarray) -> np.ndarray:
        out = np.empty_like(r)
        for j in range(r.shape[1]):  # one compiled solve per right-hand side (deep chains only)
            M = sp.csr_array(s[j] * self.T + sp.diags_array(d[:, j]))
            out[:, j] = spla.spsolve_triangular(M, r[:, j], lower=self.lower)
        return out


def relative(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``0/0 = 0`` (a zero right-hand side is solved by ``x = 0``)."""
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    out[(den <= 0) & (num > 0)] = math.inf
    return out
