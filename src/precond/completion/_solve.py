"""Row-wise ridge least squares (one ALS half-step), exact by batched Cholesky or approximate by batched (P)CG.

For every row ``i`` with observed columns ``Ω_i`` and design rows ``w_j`` (the other side's factor, ``[n, d]``):

    x_i = argmin_x Σ_{j∈Ω_i} (t_ij − w_jᵀ x)² + λ_i ‖x‖²   ⇔   (W_iᵀW_i + λ_i I) x_i = W_iᵀ t_i

(ALS, e.g. Zhou et al. 2008 eq. 4, and the exact solve of Jain–Netrapalli–Sanghavi 2013, Alg. 2).  Rows are packed
into buckets of near-equal observation counts (:func:`precond.linalg.pad_buckets`), so each bucket's designs are one
dense zero-padded ``[B, w, d]`` tensor and every per-row operation is a batched BLAS call: the Gram matrices
``W_iᵀW_i`` (``bmm``, BLAS-3), the Cholesky factorizations and solves, and the CG matvecs
``W_iᵀ(W_i p_i)`` (two batched matrix–vector products).  There is no Python loop over rows or observations; the
loops are over the buckets (about ``log(max |Ω_i|)/log 1.25`` of them) and memory chunks of a bucket.

Per-bucket methods (``plan``): ``"exact"`` (Cholesky; ``O(w d² + d³)`` per row), ``"cg"`` (matrix-free CG warm-started
from ``x0``; ``O(w d)`` per iteration) and ``"sketch_cg"`` (the same CG preconditioned by the Cholesky factor of a
sparse-sign sketched Gram ``(S_iW_i)ᵀ(S_iW_i) + λ_i I``, Gu–Song–Yin–Zhang 2024's sketch-and-precondition; a row
with at most ``s`` observations is not sketched, its preconditioner is exact).

Memory: one chunk holds at most ``budget`` numbers of padded design (``B · w · d``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from precond.linalg import Bucket, block_sign_sketch, pad_buckets, segment_pcg

#: Default budget of a chunk: this many numbers of padded design (2²⁴ ≈ 16.8 M, 134 MB in float64).
BLOCK_NUMBERS = 1 << 24
#: Per-bucket methods.
METHODS = ("exact", "cg", "sketch_cg")


@dataclass(frozen=True)
class RowBucket:
    """One bucket of rows of a :class:`RowIndex`: ``rows [B]``, ``design [B, w]`` (index of each observation's
    design row, ``-1`` padding), ``target [B, w]`` (index into the targets in the original order, ``-1`` padding)
    and ``counts [B]``."""

    rows: torch.Tensor
    design: torch.Tensor
    target: torch.Tensor
    counts: torch.Tensor

    @property
    def width(self) -> int:
        """The padded row length ``w``."""
        return int(self.design.shape[1])

    def select(self, mask: torch.Tensor) -> RowBucket:
        """The rows with ``mask`` (``[B]`` bool)."""
        return RowBucket(self.rows[mask], self.design[mask], self.target[mask], self.counts[mask])

    def chunks(self, d: int, budget: int) -> list[RowBucket]:
        """Consecutive sub-buckets of at most ``budget`` numbers of padded design ``[B, w, d]`` (at least one row)."""
        step = max(1, budget // max(1, self.width * d + d * d))
        n = int(self.rows.numel())
        return [
            RowBucket(
                self.rows[i : i + step], self.design[i : i + step], self.target[i : i + step], self.counts[i : i + step]
            )
            for i in range(0, n, step)
        ]


class RowIndex:
    """The observations of one side grouped by that side's index, computed once per fit.

    ``order`` sorts the observations by row (CSR order; ``index``/``other`` are the sorted row and design indices),
    ``counts [n_rows]`` and the padded buckets of the non-empty rows (:attr:`buckets`).
    """

    def __init__(self, index: torch.Tensor, other: torch.Tensor, n_rows: int) -> None:
        order = torch.argsort(index, stable=True)
        self._set(order, index[order], other[order], n_rows)

    def _set(self, order: torch.Tensor, index: torch.Tensor, other: torch.Tensor, n_rows: int) -> None:
        self.order, self.index, self.other, self.n_rows = order, index, other, n_rows
        self.counts = torch.bincount(index, minlength=n_rows)
        self._buckets: list[RowBucket] | None = None

    @property
    def buckets(self) -> list[RowBucket]:
        """The non-empty rows in buckets of one padded width each (:func:`precond.linalg.pad_buckets`)."""
        if self._buckets is None:
            self._buckets = [self._row_bucket(b) for b in pad_buckets(self.counts)]
        return self._buckets

    def _row_bucket(self, b: Bucket) -> RowBucket:
        pad = b.positions < 0
        design = torch.where(pad, -1, self.other[b.positions.clamp(min=0)])
        target = torch.where(pad, -1, self.order[b.positions.clamp(min=0)])
        return RowBucket(b.segments, design, target, b.counts)

    def subset(self, keep: torch.Tensor) -> RowIndex:
        """The observations of the rows with ``keep[i]`` (``[n_rows]`` bool); other rows become empty."""
        mask = keep[self.index]
        out = RowIndex.__new__(RowIndex)
        out._set(self.order[mask], self.index[mask], self.other[mask], self.n_rows)
        return out


@dataclass(frozen=True)
class CGStats:
    """Outcome of one half-step.

    Attributes:
        iterations: the most CG iterations any row ran (0 if every row was solved exactly).
        unconverged: rows that hit the iteration cap before their tolerance.
        exact_rows: rows solved by Cholesky (the ``"exact"`` buckets, and rows with ``λ_i = 0`` and fewer than
            ``d`` observations in a CG bucket: singular systems, where CG from a warm start would not reach the
            minimum-norm solution).
        cg_rows: rows solved by a CG method.
        sse: ``Σ (t − w_jᵀ x_i)²`` over the observations at the returned solution (float64 accumulation; one
            batched matvec per chunk on the design already gathered, so the caller's objective needs no new gather).
    """

    iterations: int
    unconverged: int
    exact_rows: int
    sse: float = 0.0
    cg_rows: int = 0


def _normal(W: torch.Tensor, t: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_iᵀW_i + λ_i I, W_iᵀt_i)`` for a padded ``W [B, w, d]``, ``t [B, w]``."""
    gram = W.mT @ W
    gram.diagonal(dim1=1, dim2=2).add_(lam[:, None])
    return gram, _rmatvec(W, t)


def _matvec(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``W_i x_i`` ``[B, w]`` (batched BLAS-2)."""
    return (W @ x[:, :, None])[:, :, 0]


def _rmatvec(W: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``W_iᵀ y_i`` ``[B, d]`` (batched BLAS-2)."""
    return (W.mT @ y[:, :, None])[:, :, 0]


def _exact(W: torch.Tensor, t: torch.Tensor, lam: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Cholesky solve of every row's normal equations; singular rows (Cholesky failure, or ``λ_i = 0`` with fewer than
    ``d`` observations) fall back to the minimum-norm least-squares solution (the pseudo-inverse, the ``λ → 0`` limit
    of the ridge solution)."""
    gram, rhs = _normal(W, t, lam)
    chol, info = torch.linalg.cholesky_ex(gram)
    x = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    bad = (info != 0) | ~torch.isfinite(x).all(1) | ((lam == 0) & (counts < W.shape[2]))
    if bool(bad.any()):
        x[bad] = (torch.linalg.pinv(gram[bad], hermitian=True) @ rhs[bad, :, None])[:, :, 0]
    return x


def _cg(
    W: torch.Tensor,
    t: torch.Tensor,
    lam: torch.Tensor,
    x0: torch.Tensor,
    tol: float,
    max_iter: int,
    precond: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched (P)CG on ``(W_iᵀW_i + λ_i I) x_i = W_iᵀt_i`` from ``x0`` (:func:`precond.linalg.segment_pcg`)."""

    def matvec(p: torch.Tensor) -> torch.Tensor:
        return _rmatvec(W, _matvec(W, p)) + lam[:, None] * p

    rhs = _rmatvec(W, t)
    return segment_pcg(matvec, rhs, tol=tol, max_iter=max_iter, x0=x0, precond=precond)


def _cholesky_precond(gram: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``r ↦ G_i⁻¹ r_i`` from the Cholesky factors of ``gram``; rows whose factorization fails get the identity."""
    chol, info = torch.linalg.cholesky_ex(gram)
    bad = info != 0
    if bool(bad.any()):
        chol[bad] = torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)

    def apply(r: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(r[:, :, None], chol)[:, :, 0]

    return apply


def solve_rows(
    idx: RowIndex,
    design: torch.Tensor,
    target: torch.Tensor,
    lam: torch.Tensor,
    plan: str | Callable[[int, int], str] = "exact",
    *,
    x0: torch.Tensor | None = None,
    tol: float = 0.0,
    max_iter: int = 0,
    sketch: tuple[int, torch.Generator] | None = None,
    budget: int = BLOCK_NUMBERS,
) -> tuple[torch.Tensor, CGStats]:
    """Solve every row's ridge problem; returns ``([n_rows, d], stats)``.

    Args:
        idx: the observations grouped by row (:class:`RowIndex`).
        design: the other side's factor ``[n_other, d]``; row ``j`` is the design row of observation ``(i, j)``.
        target: ``[|Ω|]`` targets in the *original* observation order.
        lam: ``[n_rows]`` ridge weight ``λ_i ≥ 0`` per row.
        plan: one of :data:`METHODS` for every bucket, or ``(width, d) ↦ method`` per bucket.
        x0: CG warm start ``[n_rows, d]`` (required by the CG methods).
        tol, max_iter: CG relative-residual tolerance and iteration cap.
        sketch: ``(s, generator)`` of the ``"sketch_cg"`` preconditioner (:func:`precond.linalg.block_sign_sketch`).
        budget: numbers of padded design per chunk.

    Rows without observations get ``x_i = 0``.  A CG row that hits ``max_iter`` keeps its last iterate (CG from
    ``x0`` never increases the row's ridge objective) and is counted in :attr:`CGStats.unconverged`.
    """
    d = design.shape[1]
    out = torch.zeros(idx.n_rows, d, dtype=design.dtype, device=design.device)
    iterations = unconverged = exact_rows = cg_rows = 0
    sse = 0.0
    design, target = _with_zero_row(design), _with_zero_row(target)  # once: padding (index −1) reads zeros
    for bucket in idx.buckets:
        method = plan if isinstance(plan, str) else plan(bucket.width, d)
        if method != "exact":
            singular = (lam[bucket.rows] == 0) & (bucket.counts < d)
            if bool(singular.any()):
                x, st = _solve_bucket(bucket.select(singular), design, target, lam, "exact", budget=budget)
                out[bucket.rows[singular]] = x
                exact_rows += int(singular.sum())
                sse += st.sse
                bucket = bucket.select(~singular)
        x, stats = _solve_bucket(bucket, design, target, lam, method, x0, tol, max_iter, sketch, budget)
        out[bucket.rows] = x
        iterations, unconverged = max(iterations, stats.iterations), unconverged + stats.unconverged
        exact_rows += stats.exact_rows
        cg_rows += stats.cg_rows
        sse += stats.sse
    return out, CGStats(iterations, unconverged, exact_rows, sse, cg_rows)


def _with_zero_row(values: torch.Tensor) -> torch.Tensor:
    return torch.cat([values, values.new_zeros((1, *values.shape[1:]))])


def _take(ext: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``ext[index]`` with ``index == -1`` reading ``ext``'s last (zero) row, as one ``index_select``."""
    flat = torch.where(index < 0, ext.shape[0] - 1, index).reshape(-1)
    return ext.index_select(0, flat).reshape(*index.shape, *ext.shape[1:])


def _solve_bucket(
    bucket: RowBucket,
    design: torch.Tensor,
    target: torch.Tensor,
    lam: torch.Tensor,
    method: str,
    x0: torch.Tensor | None = None,
    tol: float = 0.0,
    max_iter: int = 0,
    sketch: tuple[int, torch.Generator] | None = None,
    budget: int = BLOCK_NUMBERS,
) -> tuple[torch.Tensor, CGStats]:
    """:func:`solve_rows` on one bucket with one method; returns ``([B, d], stats)``.  ``design`` and ``target``
    carry an extra zero row at the end (:func:`_with_zero_row`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    d = design.shape[1]
    xs, iterations, unconverged, sse = [], 0, 0, 0.0
    for part in bucket.chunks(d, budget):
        W = _take(design, part.design)
        t = _take(target, part.target)
        lam_p = lam[part.rows]
        if method == "exact":
            xs.append(_exact(W, t, lam_p, part.counts))
            sse += float((t - _matvec(W, xs[-1])).double().square().sum())
            continue
        if x0 is None:
            raise ValueError("the CG methods need a warm start `x0`")
        precond = None
        if method == "sketch_cg":
            if sketch is None:
                raise ValueError("method 'sketch_cg' needs `sketch=(s, generator)`")
            s, generator = sketch
            if part.width <= s:  # not sketched: the exact Gram is no larger than a sketch's
                gram = W.mT @ W
            else:
                SW = block_sign_sketch(W, s, generator)
                gram = SW.mT @ SW
            gram.diagonal(dim1=1, dim2=2).add_(lam_p[:, None])
            precond = _cholesky_precond(gram)
        x, its, ok = _cg(W, t, lam_p, x0[part.rows].to(design.dtype), tol, max_iter, precond)
        xs.append(x)
        sse += float((t - _matvec(W, x)).double().square().sum())
        iterations = max(iterations, int(its.max()) if its.numel() else 0)
        unconverged += int((~ok).sum())
    x = torch.cat(xs) if xs else design.new_zeros((0, d))
    n_rows = int(bucket.rows.numel())
    n_exact = n_rows if method == "exact" else 0
    return x, CGStats(iterations, unconverged, n_exact, sse, n_rows - n_exact)


def ridge_rows(
    idx: RowIndex, design: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, budget: int = BLOCK_NUMBERS
) -> torch.Tensor:
    """Every row's ridge solution by Cholesky (:func:`solve_rows` with ``plan="exact"``), ``[n_rows, d]``."""
    return solve_rows(idx, design, target, lam, "exact", budget=budget)[0]


def ridge_rows_cg(
    idx: RowIndex,
    design: torch.Tensor,
    target: torch.Tensor,
    lam: torch.Tensor,
    x0: torch.Tensor,
    tol: float,
    max_iter: int,
    sketch: tuple[int, torch.Generator] | None = None,
) -> tuple[torch.Tensor, CGStats]:
    """Every row's ridge problem by CG from ``x0`` (``sketch=None``) or sketch-preconditioned CG
    (:func:`solve_rows` with ``plan="cg"`` / ``"sketch_cg"``)."""
    method = "cg" if sketch is None else "sketch_cg"
    return solve_rows(idx, design, target, lam, method, x0=x0, tol=tol, max_iter=max_iter, sketch=sketch)
