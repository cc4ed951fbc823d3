"""Row-wise ridge least squares (one ALS half-step), exact by batched Cholesky or approximate by batched (P)CG.

For every row ``i`` with observed columns ``Ω_i`` and design rows ``w_j`` (the other side's factor, ``[n, d]``):

    x_i = argmin_x Σ_{j∈Ω_i} (t_ij − w_jᵀ x)² + λ_i ‖x‖²   ⇔   (W_iᵀW_i + λ_i I) x_i = W_iᵀ t_i

(ALS, e.g. Zhou et al. 2008 eq. 4, and the exact solve of Jain–Netrapalli–Sanghavi 2013, Alg. 2).  The observations
of a side are one sparse CSR matrix ``A`` (row ``i`` holds ``t_ij`` at the columns ``j ∈ Ω_i``), so every right-hand
side ``W_iᵀt_i`` is one sparse–dense product ``A W`` for all rows, and the residuals are one sampled dense–dense
product (:func:`precond.linalg.segment_dot`).

Per-bucket methods (``plan``; rows are packed into buckets of near-equal observation counts,
:func:`precond.linalg.pad_buckets`):

* ``"exact"``: each chunk of a bucket gathers its zero-padded designs ``[B, w, d]`` and forms the Gram matrices with
  one ``bmm`` (BLAS-3), then batched Cholesky; ``O(w d² + d³)`` per row.
* ``"cg"``: matrix-free CG warm-started from ``x0`` on all CG rows at once; a matvec
  ``p_i ↦ W_iᵀ(W_i p_i) + λ_i p_i`` is a sampled product (``W_i p_i`` at the observed entries) then a sparse–dense
  product, ``O(|Ω| d)`` per iteration with no gathered design (it lives in the caches only as the other side's
  factor ``[n, d]``).
* ``"sketch_cg"``: the same CG preconditioned by the Cholesky factor of a sparse-sign sketched Gram
  ``(S_iW_i)ᵀ(S_iW_i) + λ_i I`` (:func:`precond.linalg.segment_sign_sketch`; Gu–Song–Yin–Zhang 2024's
  sketch-and-precondition); a row with at most ``s`` observations is not mixed, its preconditioner is exact.

There is no Python loop over rows or observations; the loops are over buckets, memory chunks and CG iterations.
Memory: one chunk holds at most ``budget`` numbers of padded design ``B · w · d`` (or sketch ``B · s · d``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from precond.linalg import compact_indices, pad_buckets, segment_csr, segment_dot, segment_pcg, segment_sign_sketch

#: Default budget of a chunk: this many numbers of padded design (2¹⁸ ≈ 262 k, 2 MB in float64: a chunk stays in
#: the caches between its gather and its Gram).
BLOCK_NUMBERS = 1 << 18
#: Most numbers of Gram matrices ``B · d²`` factorized by one batched Cholesky call (2¹⁷, 1 MB in float64: larger
#: groups leave the caches, and torch's Cholesky copies its input and output more than once).
GRAM_NUMBERS = 1 << 17
#: Most :class:`RowSet` kept by one :class:`RowIndex` (oldest dropped first).
ROW_SET_CACHE = 4
#: Per-bucket methods.
METHODS = ("exact", "cg", "sketch_cg")


def nnz_buffer(cache: dict, name: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``cache``'s ``[like.numel()]`` scratch tensor ``(name, dtype)``, made on first use: an ``|Ω|``-sized product
    per CG iteration into a fresh tensor costs a page fault per 4 kB on the CPU, several times the product itself
    (measured, BENCHMARKS.md).  Its contents are only valid until the next use under the same name."""
    key = (name, dtype)
    if key not in cache:
        cache[key] = torch.empty(like.numel(), dtype=dtype, device=like.device)
    return cache[key]


@dataclass(frozen=True)
class RowBucket:
    """One bucket of rows of a :class:`RowIndex`: ``rows [B]``, ``design [B, w]`` (index of each observation's
    design row, ``-1`` padding) and ``counts [B]``."""

    rows: torch.Tensor
    design: torch.Tensor
    counts: torch.Tensor

    @property
    def width(self) -> int:
        """The padded row length ``w``."""
        return int(self.design.shape[1])

    def select(self, mask: torch.Tensor) -> RowBucket:
        """The rows with ``mask`` (``[B]`` bool)."""
        return RowBucket(self.rows[mask], self.design[mask], self.counts[mask])

    def chunks(self, d: int, budget: int) -> list[RowBucket]:
        """Consecutive sub-buckets of at most ``budget`` numbers of padded design ``[B, w, d]`` (at least one row)."""
        return self.split(budget // max(1, self.width * d + d * d))

    def split(self, size: int) -> list[RowBucket]:
        """Consecutive sub-buckets of at most ``size`` rows (at least one)."""
        step = max(1, size)
        n = int(self.rows.numel())
        return [
            RowBucket(self.rows[i : i + step], self.design[i : i + step], self.counts[i : i + step])
            for i in range(0, n, step)
        ]


@dataclass(frozen=True)
class RowSet:
    """Some rows of a :class:`RowIndex` in CSR layout: ``rows [R]``, ``indptr [R + 1]``, the design row ``other``
    and the target index ``order`` of each of their observations ``[nnz]``, ``counts [R]``."""

    rows: torch.Tensor
    indptr: torch.Tensor
    other: torch.Tensor
    order: torch.Tensor
    counts: torch.Tensor
    csr: tuple[torch.Tensor, torch.Tensor] = field(init=False, repr=False)  # (indptr, other) for the sparse kernels

    def __post_init__(self) -> None:
        object.__setattr__(self, "csr", compact_indices(self.indptr, self.other))
        object.__setattr__(self, "_buffers", {})

    def buffer(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A ``[nnz]`` scratch tensor kept across calls (:func:`nnz_buffer`)."""
        return nnz_buffer(self._buffers, name, self.other, dtype)  # type: ignore[attr-defined]

    def slice(self, start: int, stop: int) -> RowSet:
        """Rows ``start … stop − 1`` of this set."""
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return RowSet(
            self.rows[start:stop],
            self.indptr[start : stop + 1] - a,
            self.other[a:b],
            self.order[a:b],
            self.counts[start:stop],
        )


class RowIndex:
    """The observations of one side grouped by that side's index, computed once per fit.

    ``order`` sorts the observations by row, then by design row (CSR order with ascending columns; ``index``/``other``
    are the sorted row and design indices), ``counts [n_rows]``, ``indptr [n_rows + 1]`` and the padded buckets of
    the non-empty rows (:attr:`buckets`).
    """

    def __init__(self, index: torch.Tensor, other: torch.Tensor, n_rows: int) -> None:
        width = int(other.max()) + 1 if other.numel() else 1  # one sort of the (row, design row) key
        order = torch.argsort(index * width + other, stable=True)
        self.order, self.n_rows = order, n_rows  # (``index_select``: several times faster than ``[]`` below)
        self.index, self.other = index.index_select(0, order), other.index_select(0, order)
        self.counts = torch.bincount(self.index, minlength=n_rows)
        self.indptr = torch.cat([self.counts.new_zeros(1), torch.cumsum(self.counts, 0)])
        self.csr = compact_indices(self.indptr, self.other)  # (indptr, other) for the sparse kernels
        self._buckets: list[RowBucket] | None = None
        self._bucket_members: tuple[torch.Tensor, torch.Tensor] | None = None  # (bucket id, row) of each member
        self._sets: dict[bytes, RowSet] = {}
        self._buffers: dict = {}

    def buffer(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A ``[|Ω|]`` scratch tensor kept across calls (:func:`nnz_buffer`)."""
        return nnz_buffer(self._buffers, name, self.other, dtype)

    def ones(self, dtype: torch.dtype) -> torch.Tensor:
        """``[|Ω|]`` ones (the values of the observation pattern), kept across calls."""
        fresh = ("ones", dtype) not in self._buffers
        ones = nnz_buffer(self._buffers, "ones", self.other, dtype)
        return ones.fill_(1.0) if fresh else ones

    @property
    def buckets(self) -> list[RowBucket]:
        """The non-empty rows in buckets of one padded width each (:func:`precond.linalg.pad_buckets`)."""
        if self._buckets is None:
            self._buckets = [
                RowBucket(b.segments, torch.where(b.positions < 0, -1, _take(self.other, b.positions)), b.counts)
                for b in pad_buckets(self.counts)
            ]
        return self._buckets

    def bucket_max(self, values: torch.Tensor) -> list[float]:
        """The largest of ``values`` ``[n_rows]`` over each bucket's rows, in :attr:`buckets` order."""
        buckets = self.buckets
        if self._bucket_members is None:
            empty = self.counts.new_zeros(0)
            self._bucket_members = (
                torch.cat([torch.full_like(b.rows, i) for i, b in enumerate(buckets)] or [empty]),
                torch.cat([b.rows for b in buckets] or [empty]),
            )
        bucket_id, rows = self._bucket_members
        out = values.new_full((len(buckets),), -math.inf)
        return out.scatter_reduce_(0, bucket_id, values[rows], "amax").tolist()

    def row_set(self, rows: torch.Tensor) -> RowSet:
        """The :class:`RowSet` of ``rows`` (in that order), cached (at most :data:`ROW_SET_CACHE`): a fit asks for
        the same rows every half-step."""
        key = rows.cpu().numpy().tobytes()
        if key not in self._sets:
            if len(self._sets) >= ROW_SET_CACHE:  # "auto" may change its CG rows between iterations: stay bounded
                del self._sets[next(iter(self._sets))]
            if rows.numel() == self.n_rows and bool((rows == torch.arange(self.n_rows, device=rows.device)).all()):
                self._sets[key] = RowSet(rows, self.indptr, self.other, self.order, self.counts)  # all rows
                return self._sets[key]
            counts = self.counts[rows]
            indptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
            nnz = int(indptr[-1])
            seg = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts, output_size=nnz)
            pos = self.indptr[rows][seg] + torch.arange(nnz, device=rows.device) - indptr[seg]
            other, order = self.other.index_select(0, pos), self.order.index_select(0, pos)
            self._sets[key] = RowSet(rows, indptr, other, order, counts)
        return self._sets[key]


@dataclass(frozen=True)
class CGStats:
    """Outcome of one half-step.

    Attributes:
        iterations: the most CG iterations any row ran (0 if every row was solved exactly).
        unconverged: rows that hit the iteration cap before their tolerance.
        exact_rows: rows solved by Cholesky (the ``"exact"`` buckets, and rows with ``λ_i = 0`` and fewer than
            ``d`` observations in a CG bucket: singular systems, where CG from a warm start would not reach the
            minimum-norm solution).
        sse: ``Σ (t − w_jᵀ x_i)²`` over the observations at the returned solution (float64 accumulation; one sampled
            product, so the caller's objective needs no new gather), ``nan`` when not asked for.
        cg_rows: rows solved by a CG method.
    """

    iterations: int
    unconverged: int
    exact_rows: int
    sse: float = 0.0
    cg_rows: int = 0


def _exact(gram: torch.Tensor, rhs: torch.Tensor, lam: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Cholesky solve of every row's normal equations ``(W_iᵀW_i + λ_i I) x = rhs_i`` from the Grams ``W_iᵀW_i``
    ``[B, d, d]`` (``λ_i`` is added in place); singular rows (Cholesky failure, or ``λ_i = 0`` with fewer than ``d``
    observations) fall back to the minimum-norm least-squares solution (the pseudo-inverse, the ``λ → 0`` limit of
    the ridge solution)."""
    gram.diagonal(dim1=1, dim2=2).add_(lam[:, None])
    chol, info = torch.linalg.cholesky_ex(gram)
    x = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    bad = (info != 0) | ~torch.isfinite(x).all(1) | ((lam == 0) & (counts < gram.shape[2]))
    if bool(bad.any()):
        x[bad] = (torch.linalg.pinv(gram[bad], hermitian=True) @ rhs[bad, :, None])[:, :, 0]
    return x


def _take(ext: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``ext[index]`` with ``index == -1`` reading ``ext``'s last (zero) row, as one ``index_select``."""
    flat = torch.where(index < 0, ext.shape[0] - 1, index).reshape(-1)
    return ext.index_select(0, flat).reshape(*index.shape, *ext.shape[1:])


def _solve_exact(
    bucket: RowBucket, design_ext: torch.Tensor, rhs: torch.Tensor, lam: torch.Tensor, budget: int
) -> torch.Tensor:
    """The exact rows of one bucket: the Grams chunk by chunk (a chunk's gathered design stays in the caches for its
    ``bmm``), then one batched Cholesky per group of at most :data:`GRAM_NUMBERS` numbers of Gram;
    ``design_ext`` carries an extra zero row for the padding."""
    d = design_ext.shape[1]
    xs = []
    for group in bucket.split(GRAM_NUMBERS // (d * d)):
        gram = design_ext.new_empty((int(group.rows.numel()), d, d))
        start = 0
        for part in group.chunks(d, budget):
            W = _take(design_ext, part.design)
            torch.bmm(W.mT, W, out=gram[start : start + W.shape[0]])
            start += W.shape[0]
        xs.append(_exact(gram, rhs.index_select(0, group.rows), lam.index_select(0, group.rows), group.counts))
    return torch.cat(xs) if xs else design_ext.new_zeros((0, d))


def _sketch_precond(
    rs: RowSet, design: torch.Tensor, lam: torch.Tensor, s: int, generator: torch.Generator, budget: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``r ↦ G_i⁻¹ r_i`` for the sketched Grams ``G_i = (S_iW_i)ᵀ(S_iW_i) + λ_i I`` of the rows of ``rs``, built in
    chunks of rows (``s`` is cut to the chunk's longest row: its rows are then copied, not mixed).  A row whose
    factorization fails gets the identity."""
    d, R = design.shape[1], int(rs.rows.numel())
    step = max(1, budget // (s * d + d * d))
    chols = []
    for a in range(0, R, step):
        part = rs.slice(a, min(R, a + step))
        s_part = max(1, min(s, int(part.counts.max())))
        SW = segment_sign_sketch(part.indptr, part.other, design, s_part, generator)
        gram = SW.mT @ SW
        gram.diagonal(dim1=1, dim2=2).add_(lam[a : a + step][:, None])
        chols.append(gram)
    chol, info = torch.linalg.cholesky_ex(torch.cat(chols))
    bad = info != 0
    if bool(bad.any()):
        chol[bad] = torch.eye(d, dtype=design.dtype, device=design.device)

    def apply(r: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(r[:, :, None], chol)[:, :, 0]

    return apply


def _solve_cg(
    rs: RowSet,
    design: torch.Tensor,
    rhs: torch.Tensor,
    lam: torch.Tensor,
    x0: torch.Tensor,
    tol: float,
    max_iter: int,
    precond: Callable[[torch.Tensor], torch.Tensor] | None,
    residual0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched (P)CG on ``(W_iᵀW_i + λ_i I) x_i = rhs_i`` for the rows of ``rs`` from ``x0``, matrix-free
    (:func:`precond.linalg.segment_pcg`); ``residual0`` (``t − W_i x0_i`` at the observations of ``rs``) makes the
    initial residual ``W_iᵀ residual0 − λ_i x0_i`` one sparse product instead of a matvec."""
    n_other = design.shape[0]
    r0 = None
    if residual0 is not None:
        r0 = (segment_csr(*rs.csr, residual0, n_other) @ design).addcmul_(lam[:, None], x0, value=-1.0)

    def matvec(p: torch.Tensor) -> torch.Tensor:
        wp = segment_dot(*rs.csr, p, design, out=rs.buffer("wp", design.dtype))  # W_i p_i at the observed entries
        return (segment_csr(*rs.csr, wp, n_other) @ design).addcmul_(lam[:, None], p)

    return segment_pcg(matvec, rhs, tol=tol, max_iter=max_iter, x0=x0, precond=precond, r0=r0)


def condition_estimates(gram_mean: torch.Tensor, lam: torch.Tensor, counts: torch.Tensor, d: int) -> torch.Tensor:
    """``κ(W_iᵀW_i + λ_i I)`` of every row, estimated from the mean eigenvalue ``μ_i = ‖W_i‖_F²/d`` of its Gram by
    the Marchenko–Pastur edges ``μ_i (1 ± √(d/w_i))²`` of a random-like ``w_i × d`` design:
    ``κ_i ≈ (μ_i (1 + √(d/w_i))² + λ_i) / (μ_i (1 − √(d/w_i))²₊ + λ_i)`` (``inf`` for a singular system)."""
    ratio = (d / counts.to(gram_mean.dtype)).sqrt()
    top = gram_mean * (1 + ratio).square() + lam
    bottom = gram_mean * (1 - ratio).clamp_min(0.0).square() + lam
    return torch.where(bottom > 0, top / bottom.clamp_min(torch.finfo(gram_mean.dtype).tiny), math.inf)


def solve_rows(
    idx: RowIndex,
    design: torch.Tensor,
    target: torch.Tensor,
    lam: torch.Tensor,
    plan: str | Callable[[int, int, float], str] = "exact",
    *,
    x0: torch.Tensor | None = None,
    tol: float = 0.0,
    max_iter: int = 0,
    sketch: tuple[int, torch.Generator] | None = None,
    budget: int = BLOCK_NUMBERS,
    sse: bool = True,
    min_cg_share: float = 0.0,
    ordered: bool = False,
    residual0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CGStats]:
    """Solve every row's ridge problem; returns ``([n_rows, d], stats)``.

    Args:
        idx: the observations grouped by row (:class:`RowIndex`).
        design: the other side's factor ``[n_other, d]``; row ``j`` is the design row of observation ``(i, j)``.
        target: ``[|Ω|]`` targets in the *original* observation order (``ordered=False``), or already in ``idx``'s
            CSR order, ``target[idx.order]`` (``ordered=True``: a caller that keeps its targets sorted saves a
            random gather of ``|Ω|`` numbers per half-step).
        residual0: ``t − W_i x0_i`` at every observation, in ``idx``'s CSR order, when the caller has it (the
            previous half-step's residual is this one's, both being the model's residual at the current factors):
            a CG run over every row then starts with one sparse product instead of a matvec (a sampled product
            saved).  Ignored by the exact rows and by a CG run over some of the rows.
        lam: ``[n_rows]`` ridge weight ``λ_i ≥ 0`` per row.
        plan: one of :data:`METHODS` for every bucket, or ``(width, d, κ) ↦ method`` per bucket, ``κ`` the
            bucket's largest :func:`condition_estimates` (asked with ``κ = 1`` first: the estimates are computed
            only if some bucket would then leave ``"exact"``, so a larger ``κ`` must never favour CG).
        x0: CG warm start ``[n_rows, d]`` (required by the CG methods).
        tol, max_iter: CG relative-residual tolerance and iteration cap.
        sketch: ``(s, generator)`` of the ``"sketch_cg"`` preconditioner (:func:`precond.linalg.segment_sign_sketch`).
        budget: numbers of padded design (or sketch) per chunk.
        sse: compute :attr:`CGStats.sse` (one sampled product over the observations); ``nan`` otherwise.
        min_cg_share: with a per-bucket ``plan``, solve every row exactly when the buckets it sends to CG hold less
            than this share of the observations (a CG run's fixed cost per iteration is not worth a few rows).

    Rows without observations get ``x_i = 0``.  A CG row that hits ``max_iter`` keeps its last iterate (CG from
    ``x0`` never increases the row's ridge objective) and is counted in :attr:`CGStats.unconverged`.
    """
    d, n_other = design.shape[1], design.shape[0]
    out = torch.zeros(idx.n_rows, d, dtype=design.dtype, device=design.device)
    # (``index_select``: several times faster than ``[]`` on the CPU)
    t = target if ordered else torch.index_select(target, 0, idx.order, out=idx.buffer("target", target.dtype))
    rhs = segment_csr(*idx.csr, t, n_other) @ design  # W_iᵀ t_i of every row
    design_ext = torch.cat([design, design.new_zeros((1, d))])  # padding (index −1) reads the zero row
    cg_rows: dict[str, list[torch.Tensor]] = {}
    exact_rows = 0
    if isinstance(plan, str):
        methods = [plan] * len(idx.buckets)
    else:
        methods = [plan(bucket.width, d, 1.0) for bucket in idx.buckets]  # by cost alone first
        if any(m != "exact" for m in methods):  # then the conditioning (one pass, one host read)
            sq_norms = design.square().sum(1, keepdim=True)  # μ_i = Σ_{j∈Ω_i} ‖w_j‖² / d, one sparse product
            gram_mean = (segment_csr(*idx.csr, idx.ones(design.dtype), n_other) @ sq_norms)[:, 0].div_(d)
            kappas = idx.bucket_max(condition_estimates(gram_mean, lam, idx.counts, d))
            methods = [plan(bucket.width, d, kappa) for bucket, kappa in zip(idx.buckets, kappas, strict=True)]
        cg_share = sum(int(b.counts.sum()) for b, m in zip(idx.buckets, methods, strict=True) if m != "exact")
        if cg_share < min_cg_share * int(idx.indptr[-1]):
            methods = ["exact"] * len(methods)
    for bucket, method in zip(idx.buckets, methods, strict=True):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method != "exact":
            singular = (lam.index_select(0, bucket.rows) == 0) & (bucket.counts < d)
            if not bool(singular.any()):
                cg_rows.setdefault(method, []).append(bucket.rows)
                continue
            cg_rows.setdefault(method, []).append(bucket.rows[~singular])
            bucket = bucket.select(singular)
        out.index_copy_(0, bucket.rows, _solve_exact(bucket, design_ext, rhs, lam, budget))
        exact_rows += int(bucket.rows.numel())
    iterations = unconverged = n_cg = 0
    for method, parts in cg_rows.items():
        rs = idx.row_set(torch.sort(torch.cat(parts)).values)  # ascending: every row is idx's own CSR layout
        if rs.rows.numel() == 0:
            continue
        if x0 is None:
            raise ValueError("the CG methods need a warm start `x0`")
        precond = None
        if method == "sketch_cg":
            if sketch is None:
                raise ValueError("method 'sketch_cg' needs `sketch=(s, generator)`")
            precond = _sketch_precond(rs, design, lam.index_select(0, rs.rows), sketch[0], sketch[1], budget)
        x0_rs = x0.index_select(0, rs.rows).to(design.dtype)
        rhs_rs, lam_rs = rhs.index_select(0, rs.rows), lam.index_select(0, rs.rows)
        every_row = residual0 is not None and rs.other is idx.other  # the all-rows set is idx's own layout
        e0 = residual0 if every_row else None
        x, its, ok = _solve_cg(rs, design, rhs_rs, lam_rs, x0_rs, tol, max_iter, precond, e0)
        out.index_copy_(0, rs.rows, x)
        iterations = max(iterations, int(its.max()))
        unconverged += int((~ok).sum())
        n_cg += int(rs.rows.numel())
    total = float("nan")
    if sse:
        residual = segment_dot(*idx.csr, out, design, out=idx.buffer("dot", design.dtype)).sub_(t)
        total = float(torch.linalg.vector_norm(residual, dtype=torch.float64)) ** 2  # accumulated in float64
    return out, CGStats(iterations, unconverged, exact_rows, total, n_cg)


def ridge_rows(
    idx: RowIndex, design: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, budget: int = BLOCK_NUMBERS
) -> torch.Tensor:
    """Every row's ridge solution by Cholesky (:func:`solve_rows` with ``plan="exact"``), ``[n_rows, d]``."""
    return solve_rows(idx, design, target, lam, "exact", budget=budget, sse=False)[0]


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
