"""Exact row-wise ridge least squares (one ALS half-step) by batched Cholesky on the k×k normal equations.

For every row ``i`` with observed columns ``Ω_i`` and design rows ``w_j`` (the other side's factor, ``[n, d]``):

    x_i = argmin_x Σ_{j∈Ω_i} (t_ij − w_jᵀ x)² + λ_i ‖x‖²   ⇔   (Σ_j w_j w_jᵀ + λ_i I) x_i = Σ_j t_ij w_j,

(ALS, e.g. Zhou et al. 2008 eq. 4, and the exact solve of Jain–Netrapalli–Sanghavi 2013, Alg. 2).  The Gram matrices
are segment sums of per-observation outer products (``index_add_``), so there is no Python loop over rows or
observations; the only loop is over fixed-size blocks of consecutive rows.

Memory: a block holds at most ``block_obs`` observations (``block_obs · d²`` numbers for the outer products) and
at most ``block_rows`` rows (``block_rows · d²`` for the Gram matrices); one row with more than ``block_obs``
observations is a block of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from precond.linalg import segment_gram_matvec, segment_pcg, segment_sketch_factor, triangular_precond

#: Default budget of a block: outer products of this many numbers (2²⁴ ≈ 16.8 M, 134 MB in float64).
BLOCK_NUMBERS = 1 << 24


class RowIndex:
    """The observations of one side sorted by that side's index (CSR order), computed once per fit."""

    def __init__(self, index: torch.Tensor, other: torch.Tensor, n_rows: int) -> None:
        self.order = torch.argsort(index, stable=True)
        self.index = index[self.order]
        self.other = other[self.order]
        self.n_rows = n_rows
        self.counts = torch.bincount(index, minlength=n_rows)
        self.indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=index.device)
        self.indptr[1:] = torch.cumsum(self.counts, 0)

    def subset(self, keep: torch.Tensor) -> RowIndex:
        """The observations of the rows with ``keep[i]`` (``[n_rows]`` bool); other rows become empty."""
        mask = keep[self.index]
        out = RowIndex.__new__(RowIndex)
        out.order, out.index, out.other, out.n_rows = self.order[mask], self.index[mask], self.other[mask], self.n_rows
        out.counts = torch.where(keep, self.counts, torch.zeros_like(self.counts))
        out.indptr = torch.zeros_like(self.indptr)
        out.indptr[1:] = torch.cumsum(out.counts, 0)
        return out

    def blocks(self, d: int, budget: int = BLOCK_NUMBERS) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` row ranges covering all rows, each within ``budget`` numbers of outer products."""
        per_block = max(1, budget // (d * d))
        indptr = self.indptr.cpu()
        out, start = [], 0
        while start < self.n_rows:
            limit = int(indptr[start]) + per_block
            stop = int(torch.searchsorted(indptr, torch.tensor(limit), right=True)) - 1
            stop = min(max(stop, start + 1), start + per_block, self.n_rows)
            out.append((start, stop))
            start = stop
        return out


def ridge_rows(
    idx: RowIndex, design: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, budget: int = BLOCK_NUMBERS
) -> torch.Tensor:
    """Solve every row's ridge problem exactly; returns ``[n_rows, d]``.

    Args:
        idx: the observations sorted by row (:class:`RowIndex`).
        design: the other side's factor ``[n_other, d]``; row ``j`` is the design row of observation ``(i, j)``.
        target: ``[|Ω|]`` targets in the *original* observation order.
        lam: ``[n_rows]`` ridge weight ``λ_i ≥ 0`` per row.

    Rows without observations get ``x_i = 0``.  Where the normal matrix is singular (``λ_i = 0`` with fewer than
    ``d`` independent design rows) Cholesky fails and that row falls back to the minimum-norm least-squares solution
    (the pseudo-inverse, the ``λ → 0`` limit of the ridge solution).
    """
    d = design.shape[1]
    out = torch.zeros(idx.n_rows, d, dtype=design.dtype, device=design.device)
    t_sorted = target[idx.order]
    eye = torch.eye(d, dtype=design.dtype, device=design.device)
    for start, stop in idx.blocks(d, budget):
        lo, hi = int(idx.indptr[start]), int(idx.indptr[stop])
        if hi == lo:
            continue
        local = idx.index[lo:hi] - start
        w = design[idx.other[lo:hi]]
        outer = (w[:, :, None] * w[:, None, :]).reshape(hi - lo, d * d)
        gram = torch.zeros(stop - start, d * d, dtype=design.dtype, device=design.device)
        gram.index_add_(0, local, outer)
        rhs = torch.zeros(stop - start, d, dtype=design.dtype, device=design.device)
        rhs.index_add_(0, local, w * t_sorted[lo:hi, None])
        a = gram.reshape(-1, d, d) + lam[start:stop, None, None] * eye
        chol, info = torch.linalg.cholesky_ex(a)
        x = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
        counts = idx.counts[start:stop]
        bad = (info != 0) | ~torch.isfinite(x).all(1) | ((lam[start:stop] == 0) & (counts < d))
        bad &= counts > 0
        if bool(bad.any()):
            x[bad] = (torch.linalg.pinv(a[bad], hermitian=True) @ rhs[bad, :, None])[:, :, 0]
        x[counts == 0] = 0
        out[start:stop] = x
    return out


@dataclass(frozen=True)
class CGStats:
    """Outcome of one :func:`ridge_rows_cg` half-step.

    Attributes:
        iterations: the most CG iterations any row ran (the half-step's cost is this many ``O(|Ω| d)`` sweeps).
        unconverged: rows that hit the iteration cap before their tolerance.
        exact_rows: rows handed to the exact solver instead (``λ_i = 0`` with fewer than ``d`` observations).
    """

    iterations: int
    unconverged: int
    exact_rows: int


def ridge_rows_cg(
    idx: RowIndex,
    design: torch.Tensor,
    target: torch.Tensor,
    lam: torch.Tensor,
    x0: torch.Tensor,
    tol: float,
    max_iter: int,
    sketch: tuple[int, int, torch.Generator] | None = None,
) -> tuple[torch.Tensor, CGStats]:
    """Solve every row's ridge problem ``(W_iᵀW_i + λ_i I) x_i = W_iᵀ t_i`` approximately by batched (P)CG.

    Matrix-free: each iteration gathers the design rows per observation and segment-sums (``O(|Ω| d)``, no
    ``d × d`` matrices), all rows at once (:func:`precond.linalg.segment_pcg`), warm-started from ``x0`` and
    stopped per row at relative residual ``tol`` or after ``max_iter`` iterations.  With ``sketch = (s, nnz,
    generator)`` each row is preconditioned by ``(R_iᵀR_i)⁻¹`` from a sparse sign sketch of ``W_i``
    (:func:`precond.linalg.segment_sketch_factor`, Gu–Song–Yin–Zhang 2024's sketch-and-precondition).

    Rows without observations get ``0``; rows with ``λ_i = 0`` and fewer than ``d`` observations (singular
    systems, where CG from a warm start would not reach the minimum-norm solution) go to :func:`ridge_rows`.
    A row that hits ``max_iter`` keeps its last CG iterate (still no worse than ``x0`` for its ridge objective)
    and is counted in :attr:`CGStats.unconverged`.
    Memory: the gathered design ``|Ω| d`` numbers, plus ``m (s + d) d`` for the sketch factors.
    """
    d = design.shape[1]
    out = torch.zeros(idx.n_rows, d, dtype=design.dtype, device=design.device)
    singular = (lam == 0) & (idx.counts > 0) & (idx.counts < d)
    exact_rows = int(singular.sum())
    if exact_rows:
        out += ridge_rows(idx.subset(singular), design, target, lam)
        idx = idx.subset(~singular)
    present = idx.counts > 0
    rows = torch.nonzero(present).reshape(-1)
    if rows.numel() == 0:
        return out, CGStats(0, 0, exact_rows)
    local = torch.full((idx.n_rows,), -1, dtype=torch.int64, device=design.device)
    local[rows] = torch.arange(rows.numel(), device=design.device)
    seg = local[idx.index]
    A = design[idx.other]
    lam_local = lam[rows]
    b = torch.zeros(rows.numel(), d, dtype=design.dtype, device=design.device)
    b.index_add_(0, seg, A * target[idx.order][:, None])
    precond = None
    if sketch is not None:
        s, nnz, generator = sketch
        precond = triangular_precond(segment_sketch_factor(seg, A, lam_local, s, min(nnz, s), generator))
    x, its, ok = segment_pcg(
        lambda p: segment_gram_matvec(seg, A, p, lam_local),
        b,
        tol=tol,
        max_iter=max_iter,
        x0=x0[rows].to(design.dtype),
        precond=precond,
    )
    out[rows] = x
    return out, CGStats(int(its.max()), int((~ok).sum()), exact_rows)
