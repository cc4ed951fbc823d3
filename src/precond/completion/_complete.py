"""``complete``: low-rank matrix completion by alternating ridge least squares (ALS), exact or approximate row solves.

Row solvers (``solver=``), all batched over rows (:mod:`._solve`):

* ``"exact"``: batched Cholesky on the ``d × d`` normal equations, ``O(|Ω| d² + m d³)`` per half-step.
* ``"cg"``: matrix-free batched CG on ``(W_iᵀW_i + λ_i I) x = W_iᵀ t_i``, warm-started from the previous iterate,
  ``O(|Ω| d)`` per CG iteration; the iteration count depends on ``κ(W_i)``.
* ``"sketch_cg"``: the same CG preconditioned per row by ``(R_iᵀR_i)⁻¹``, ``R_iᵀR_i`` the Cholesky factorization of
  ``(S_iW_i)ᵀ(S_iW_i) + λ_i I`` for a sign sketch ``S_i`` of ``s = SKETCH_FACTOR · d`` rows
  (:func:`precond.linalg.block_sign_sketch`; Gu–Song–Yin–Zhang, ICLR 2024, "FastMultiReg", with the QR of the sketch
  replaced by the Cholesky factor of its Gram, the same ``R_i`` up to signs): ``O(|Ω| d)`` for the sketches plus
  ``O(m (s d² + d³))`` for the factors (the paper's ``n k³`` term, not avoided), then a ``κ(W_i)``-independent
  number of ``O(|Ω| d)`` iterations.  A row with at most ``s`` observations is not sketched (its preconditioner is
  exact and PCG takes one step).
* ``"auto"``: per bucket of rows of near-equal count ``w`` (:mod:`._solve`), the cheaper of ``"exact"`` and
  ``"cg"`` by the cost model of :func:`auto_method`, in multiply–adds of a batched Gram: exact ``w d² + d³``, CG
  ``2 (1 + AUTO_CG_ITERS) · SPARSE_PASS_COST · w d`` (the initial residual and every iteration are two sparse passes
  over the row's ``w`` observations, one of those multiply–adds costing ``SPARSE_PASS_COST`` Gram ones).  CG wins
  once ``d + d²/w`` exceeds ``2 (1 + AUTO_CG_ITERS) · SPARSE_PASS_COST`` (= 28): ``d ≳ 25`` for rows of 200
  observations.  A bucket goes to CG only if its rows' estimated ``κ(W_iᵀW_i + λ_i I)`` is at most
  ``AUTO_CG_KAPPA`` (:func:`~._solve.condition_estimates`: Marchenko–Pastur edges of a random-like design plus the
  ridge; a short row with a small ridge is ill conditioned for CG and cheap to factorize), and a half-step's CG
  buckets only if they hold at least ``AUTO_MIN_CG_SHARE`` of its observations (a CG run has a fixed cost per
  iteration).  ``"sketch_cg"`` is not among ``"auto"``'s choices: on the designs of ALS (the other side's factor)
  its preconditioned CG runs as many iterations as plain CG (measured, BENCHMARKS.md), so its sketches and factors
  are overhead there; it is the solver for ill-conditioned designs, where plain CG's iteration count grows with
  ``κ(W_i)``.

Tolerance schedule of the CG solves at outer iteration ``t = 1, 2, …``:

    tol_t = max(tol_min, CG_TOL_START · CG_TOL_RATE^(t−1)),   tol_min = max(CG_TOL_FLOOR, 100 ε_dtype),

a relative residual per row, capped at ``CG_MAX_ITER_FACTOR · d + 10`` iterations.  Gu–Song–Yin–Zhang (2024,
Thm. 4.2 and its regression-solver appendix) need each approximate regression accurate to an ``ε_reg`` polynomially
small in the target error; AltMin contracts the error geometrically, so a tolerance shrinking geometrically keeps
the solve error below the contraction's error at every step (linear convergence of inexact AltMin) while the early
iterations stay cheap (the start, ``CG_TOL_START``, is the loosest tried, 0.01–0.3, that reaches the exact solver's
RMSE in as many outer iterations on the benchmark's problems; BENCHMARKS.md).  Each CG run starts from the previous
iterate and never increases that row's ridge objective,
so the ALS objective is still non-increasing.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch

from precond.completion._biases import fit_biases
from precond.completion._init import spectral_init, trim_rows
from precond.completion._result import CompletionResult, ConvergenceWarning, HistoryEntry, SolveEntry
from precond.completion._solve import CGStats, RowIndex, solve_rows
from precond.completion._validate import (
    DUPLICATES,
    REG_SCALINGS,
    check_choice,
    check_int,
    check_observations,
    check_real,
    check_shape,
)
from precond.linalg import segment_dot

#: Row solvers (see the module docstring).
SOLVERS = ("auto", "exact", "sketch_cg", "cg")
#: CG tolerance schedule ``tol_t = max(tol_min, CG_TOL_START · CG_TOL_RATE^(t−1))``, ``tol_min`` ≥ ``CG_TOL_FLOOR``.
CG_TOL_START, CG_TOL_RATE, CG_TOL_FLOOR = 1e-1, 0.5, 1e-12
#: CG iteration cap per half-step: ``CG_MAX_ITER_FACTOR · d + 10``.
CG_MAX_ITER_FACTOR = 2
#: Sketch size ``s = SKETCH_FACTOR · d``.
SKETCH_FACTOR = 4
#: ``"auto"`` cost model (:func:`auto_method`): warm-started CG iterations assumed per half-step (4–10 measured on
#: the benchmark's problems, BENCHMARKS.md), and the cost of one multiply–add of a sparse pass (memory-bound) in
#: multiply–adds of a batched Gram (compute-bound BLAS-3).
AUTO_CG_ITERS, SPARSE_PASS_COST = 6, 2.0
#: ``"auto"`` sends a bucket to CG only if its estimated condition number is at most this, and a half-step's CG
#: buckets only if they hold at least ``AUTO_MIN_CG_SHARE`` of its observations (else it solves every row exactly).
AUTO_CG_KAPPA, AUTO_MIN_CG_SHARE = 1e3, 0.25


def auto_method(width: int, d: int, kappa: float = 1.0) -> str:
    """``"exact"`` or ``"cg"`` for a bucket of rows of ``width`` observations, design width ``d`` and estimated
    condition number ``kappa`` (the largest :func:`~._solve.condition_estimates` over the bucket): the cheaper by
    the cost model in the module docstring, CG only for ``kappa ≤ AUTO_CG_KAPPA``."""
    exact = width * d * d + d**3
    cg = 2 * (1 + AUTO_CG_ITERS) * SPARSE_PASS_COST * width * d
    return "cg" if kappa <= AUTO_CG_KAPPA and cg < exact else "exact"


def cg_tolerance_floor(dtype: torch.dtype) -> float:
    """``tol_min = max(CG_TOL_FLOOR, 100 ε_dtype)``: the tightest CG tolerance of the schedule."""
    return max(CG_TOL_FLOOR, 100 * torch.finfo(dtype).eps)


def rounding_floor(centered: torch.Tensor, dtype: torch.dtype) -> float:
    """``(16 ε)² Σ (r − μ)²``: an objective at or below it is rounding noise, the fit is exact."""
    return (16 * torch.finfo(dtype).eps) ** 2 * float(centered.double().square().sum())


def check_objective(objective: float, iteration: int, dtype: torch.dtype) -> None:
    """Raise ``FloatingPointError`` on a non-finite objective (never a silent NaN)."""
    if not math.isfinite(objective):
        raise FloatingPointError(
            f"the objective became non-finite at iteration {iteration} ({dtype}); rescale `values` or use float64"
        )


def has_converged(
    objective: float,
    previous: float,
    floor: float,
    tol: float,
    solver: str,
    cg_tol: float,
    dtype: torch.dtype,
    *,
    monotone: bool = True,
) -> bool:
    """The stopping rule of :func:`complete` (its docstring): at the rounding floor, or a relative decrease ``≤ tol``
    once the CG tolerance is settled (``monotone=False``: the absolute change, for sample splitting)."""
    settled = solver == "exact" or cg_tol <= max(cg_tolerance_floor(dtype), math.sqrt(tol))
    change = previous - objective if monotone else abs(previous - objective)
    return objective <= floor or (settled and math.isfinite(previous) and change <= tol * previous)


def cg_tolerance(iteration: int, dtype: torch.dtype) -> float:
    """The CG relative-residual tolerance of outer iteration ``iteration`` (from 1), see the module docstring."""
    return max(cg_tolerance_floor(dtype), CG_TOL_START * CG_TOL_RATE ** (iteration - 1))


class HeldOut:
    """Held-out entries ``(rows, cols, values)`` sorted by row once, so that their RMSE each iteration is one sampled
    product (:func:`precond.linalg.segment_dot`) into a kept buffer, with no ``[n_val, k]`` gathers."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, m: int, device: torch.device):
        self.idx = RowIndex(rows.to(device), cols.to(device), m)
        self.values = values.to(device).index_select(0, self.idx.order)

    def rmse(self, U: torch.Tensor, V: torch.Tensor, b: torch.Tensor, cb: torch.Tensor, mean: float) -> float:
        """``√(mean (r − μ − b_i − c_j − u_iᵀv_j)²)`` over the held-out entries (float64 accumulation)."""
        idx = self.idx
        pred = segment_dot(*idx.csr, U, V, out=idx.buffer("dot", U.dtype))
        pred.add_(b.index_select(0, idx.index)).add_(cb.index_select(0, idx.other)).add_(mean).sub_(self.values)
        if pred.numel() == 0:
            return math.nan
        return float(torch.linalg.vector_norm(pred, dtype=torch.float64)) / math.sqrt(pred.numel())


class _HalfStep:
    """One side's row solver, with what is fixed across iterations (the row index, the sketch stream)."""

    def __init__(self, solver: str, idx: RowIndex, lam: torch.Tensor, d: int, generator: torch.Generator) -> None:
        self.solver, self.idx, self.lam, self.d, self.generator = solver, idx, lam, d, generator

    def __call__(
        self,
        design: torch.Tensor,
        target: torch.Tensor,
        x0: torch.Tensor,
        tol: float,
        *,
        sse: bool = True,
        ordered: bool = False,
        residual0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, CGStats]:
        d = self.d
        plan = auto_method if self.solver == "auto" else self.solver
        return solve_rows(
            self.idx,
            design,
            target,
            self.lam,
            plan,
            x0=x0,
            tol=tol,
            max_iter=CG_MAX_ITER_FACTOR * d + 10,
            sketch=(SKETCH_FACTOR * d, self.generator),
            sse=sse,
            min_cg_share=AUTO_MIN_CG_SHARE if self.solver == "auto" else 0.0,
            ordered=ordered,
            residual0=residual0,
        )


def split_observations(count: int, n_parts: int, seed: int) -> list[torch.Tensor]:
    """The paper mode's partition of the observations ``0 … count−1`` into ``n_parts`` disjoint parts of near-equal
    size, uniformly at random: ``torch.tensor_split(torch.randperm(count, generator=seeded(seed)), n_parts)``."""
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return list(torch.tensor_split(perm, n_parts))


def _lam(reg: float, counts: torch.Tensor, scaling: str, dt: torch.dtype) -> torch.Tensor:
    return reg * counts.to(dt) if scaling == "count" else torch.full(counts.shape, reg, dtype=dt, device=counts.device)


def _penalty(lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (lam.double() * x.double().square().sum(1)).sum()


class Progress:
    """The per-iteration bookkeeping of the ALS loop that :func:`complete` and
    :func:`~precond.completion.distributed_complete` share: the objective (Zhou et al. 2008, eq. 3, with the bias
    terms of Koren–Bell–Volinsky 2009, eq. 5), ``history``, ``solves`` and the stopping rule (:func:`has_converged`).
    """

    def __init__(self, floor: float, tol: float, dtype: torch.dtype, start: float) -> None:
        self.floor, self.tol, self.dtype, self.start = floor, tol, dtype, start
        self.history: list[HistoryEntry] = []
        self.solves: list[SolveEntry] = []
        self.previous = self.objective = math.inf
        self.converged = False
        self.iterations = 0

    def record(
        self,
        iteration: int,
        sse: float,
        observed: int,
        factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        lams: tuple[torch.Tensor, torch.Tensor],
        solver: str,
        cg_tol: float,
        *,
        val_rmse: float | None = None,
        monotone: bool = True,
    ) -> bool:
        """Add iteration ``iteration`` (its residual sum of squares ``sse`` over ``observed`` entries, the factors
        ``(U, V, b, c)`` and ridge weights ``(λ_u, λ_v)``); true when the loop has converged and must stop."""
        U, V, b, cb = factors
        lam_u, lam_v = lams
        self.iterations = iteration
        penalty = _penalty(lam_u, U) + _penalty(lam_v, V) + (lam_u.double() * b.double().square()).sum()
        objective = sse + float(penalty + (lam_v.double() * cb.double().square()).sum())
        check_objective(objective, iteration, self.dtype)
        self.objective = objective
        self.history.append((iteration, math.sqrt(sse / observed), val_rmse, time.perf_counter() - self.start))
        if has_converged(objective, self.previous, self.floor, self.tol, solver, cg_tol, self.dtype, monotone=monotone):
            self.converged = True
            return True
        self.previous = objective
        return False

    def result(
        self,
        factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        mean: float,
        *,
        biases: bool,
        solver: str,
        shape: tuple[int, int],
        reg: float,
        reg_scaling: str,
    ) -> CompletionResult:
        """The :class:`CompletionResult` of the loop, ending at ``factors`` ``(U, V, b, c)``."""
        U, V, b, cb = factors
        return CompletionResult(
            U=U,
            V=V,
            row_bias=b if biases else None,
            col_bias=cb if biases else None,
            mean=mean if biases else None,
            history=self.history,
            iterations=self.iterations,
            converged=self.converged,
            solver=solver,
            objective=self.objective,
            shape=shape,
            rank=U.shape[1],
            reg=reg,
            reg_scaling=reg_scaling,
            solves=self.solves,
        )


def complete(
    rows: Any,
    cols: Any,
    values: Any,
    shape: tuple[int, int],
    rank: int,
    *,
    reg: float = 0.1,
    solver: str = "auto",
    max_iter: int = 50,
    tol: float = 1e-6,
    biases: bool = False,
    validation: tuple[Any, Any, Any] | None = None,
    seed: int = 0,
    reg_scaling: str = "none",
    duplicates: str = "error",
    dtype: torch.dtype | None = None,
    trim: float | None = None,
    sample_splitting: bool = False,
    warn: bool = True,
) -> CompletionResult:
    """Fit ``R ≈ U Vᵀ`` (plus ``mean + row_bias + col_bias`` with ``biases=True``) to observed entries.

    Minimizes the ALS objective (Zhou et al. 2008, eq. 3; Koren–Bell–Volinsky 2009, eq. 5 for the biases)

        Σ_{(i,j)∈Ω} (r_ij − μ − b_i − c_j − u_iᵀ v_j)² + Σ_i λ_i (‖u_i‖² + b_i²) + Σ_j λ_j (‖v_j‖² + c_j²)

    with ``λ_i = reg`` (``reg_scaling="none"``) or ``λ_i = reg · |Ω_i|`` (``"count"``: ALS-WR, Spark MLlib's
    scaling); ``μ`` is the observed mean and the biases are present only with ``biases=True`` (otherwise nothing is
    centered, so an exactly rank-``k`` matrix stays rank ``k``).

    Start: with biases, ``b, c`` of the bias-only ridge model (:mod:`precond.completion._biases`); then ``V`` from a
    randomized truncated SVD of the ``|Ω|/(mn)``-rescaled observed matrix of ``r − μ − b_i − c_j`` (of ``r`` without
    biases), see :mod:`precond.completion._init`.  Each iteration solves every row's ``(u_i, b_i)`` given ``V, c``
    (exactly by batched Cholesky, or approximately by CG: ``solver``), then every column's ``(v_j, c_j)`` given
    ``U, b``; the objective never increases (also with the CG solvers, which start from the previous iterate).
    It stops when the objective's relative decrease is ``≤ tol`` or it reaches the rounding floor
    ``(16 ε)² Σ (r − μ)²`` (``converged=True``), or after ``max_iter`` iterations.  With a CG solver the decrease
    test counts only once the CG tolerance is ``≤ max(tol_min, √tol)`` (an inexact solve perturbs the objective by
    ``O(tol_t²)``; a loose solve that stalls on its warm start must not read as convergence).

    Args:
        rows, cols: integer indices ``[|Ω|]`` of the observed entries (NumPy, torch or lists).  For a SciPy sparse
            matrix use :func:`precond.completion.from_scipy`; explicit zeros in it are observations.
        values: observed values ``[|Ω|]``, finite.
        shape: ``(m, n)``.
        rank: ``k``, ``1 ≤ k ≤ min(m, n)``.
        reg: ridge weight ``≥ 0``.  With ``reg = 0`` a row with fewer than ``k`` (``k + 1`` with biases)
            observations takes the minimum-norm least-squares solution.
        solver: ``"auto"`` (default: per bucket of rows, exact Cholesky or matrix-free CG, whichever the cost
            model rates cheaper), ``"exact"``, ``"sketch_cg"`` or ``"cg"``; rules, costs and the CG tolerance
            schedule in :mod:`precond.completion._complete`.  :attr:`CompletionResult.solves` records the schedule.
        max_iter, tol: iteration cap and relative-decrease tolerance.
        biases: fit ``μ``, row and column biases.
        validation: optional ``(rows, cols, values)`` held-out entries; their RMSE is recorded each iteration.
        seed: seed of the random probe of the initial SVD (the fit is deterministic given it).
        reg_scaling: ``"none"`` or ``"count"`` (see above).
        duplicates: ``"error"`` (default) refuses repeated ``(row, col)`` pairs; ``"mean"`` averages them.
        dtype: ``torch.float64`` or ``torch.float32``; default float32 if ``values`` is float32, else float64.
        trim: incoherence trimming of the initial factor (``None``: off): rows of ``V₀`` longer than ``trim`` times
            its RMS row norm are rescaled to that length (:func:`precond.completion._init.trim_rows`; the paper's
            constant is ``trim = 2 μ √k`` for a ``μ``-incoherent matrix, JNS13 Alg. 2 step 4).
        sample_splitting: the paper's mode (Gu–Song–Yin–Zhang 2024 / JNS13 Alg. 2 step 1, ``T = max_iter``): the
            observations are split uniformly at random into ``2T + 1`` disjoint parts
            (:func:`split_observations` with ``seed``); ``Ω_0`` gives the initial SVD (rescaled by
            ``p = |Ω_0|/(mn)``), the ``t``-th row half-step uses only ``Ω_t`` and the ``t``-th column half-step only
            ``Ω_{T+t}`` (``λ_i`` counted on that part with ``"count"``).  Each part is used once, so it needs about
            ``2T + 1`` times the samples of the default mode; a row without observations in a part gets a zero
            factor for that half-step.  Without biases only; the factors are not re-orthonormalized between
            half-steps (with ``reg = 0`` that changes only the basis, not ``U Vᵀ``).  The stopping test and
            ``history`` use the objective on all of ``Ω``, which need not decrease here (so the test is on
            ``|Δ objective|``).
        warn: emit a :class:`~precond.completion.ConvergenceWarning` when ``max_iter`` is reached unconverged.

    Cold start: a row (column) without observations gets a zero factor and zero bias, so its predictions are
    ``μ + c_j`` (``μ + b_i``), or 0 without biases; the other rows are unaffected.

    Memory: ``O(|Ω| (k + 10))`` for the initial SVD, ``O(|Ω|)`` for the sorted observations and residuals (the
    targets in both sides' order and up to five ``|Ω|``-vectors of scratch kept for the fit, so that no product
    allocates per CG iteration), plus the
    blocks of :mod:`._solve` (at most ``2¹⁸`` numbers of gathered design and ``2¹⁷`` of Gram matrices, 3 MB in
    float64); the CG solvers gather no design (their products run on the observations' sparse matrix), and
    ``"sketch_cg"`` keeps one ``(k+1)²`` preconditioner factor per sketched row.

    Raises:
        ValueError / TypeError: naming the argument, for bad indices (negative, out of range, not integer),
            duplicates, NaN/inf values, length mismatch, no observations, ``rank`` out of range, bad options.
        FloatingPointError: the objective became non-finite (values too large for the dtype).
    """
    start = time.perf_counter()
    m, n = check_shape(shape)
    k = check_int(rank, "rank", 1)
    if k > min(m, n):
        raise ValueError(f"`rank` must be ≤ min(shape) = {min(m, n)}, got {k}")
    reg = check_real(reg, "reg", minimum=0.0)
    tol = check_real(tol, "tol", minimum=0.0)
    max_iter = check_int(max_iter, "max_iter", 1)
    seed = check_int(seed, "seed", 0)
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}")
    if not isinstance(biases, bool):
        raise TypeError(f"`biases` must be True or False, got {biases!r}")
    check_choice(reg_scaling, "reg_scaling", REG_SCALINGS)
    check_choice(duplicates, "duplicates", DUPLICATES)
    if trim is not None:
        trim = check_real(trim, "trim", minimum=0.0, strict=True)
    for flag, name in ((sample_splitting, "sample_splitting"), (warn, "warn")):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be True or False, got {flag!r}")
    if sample_splitting and biases:
        raise ValueError("`sample_splitting=True` is the paper's model without biases; pass biases=False")
    r, c, v = check_observations(rows, cols, values, (m, n), dtype, duplicates)
    dt, device = v.dtype, v.device
    if sample_splitting and v.numel() < 2 * max_iter + 1:
        raise ValueError(
            f"`sample_splitting=True` splits the {v.numel()} observations into 2·max_iter+1 = {2 * max_iter + 1} "
            "parts; lower `max_iter` or observe more entries"
        )
    val = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 3:
            raise ValueError("`validation` must be a tuple (rows, cols, values) of held-out entries")
        val = HeldOut(*check_observations(*validation, (m, n), dt, "keep", prefix="validation "), m, device)

    mean = float(v.double().mean()) if biases else 0.0
    centered = v - mean
    by_row, by_col = RowIndex(r, c, m), RowIndex(c, r, n)
    lam_u, lam_v = _lam(reg, by_row.counts, reg_scaling, dt), _lam(reg, by_col.counts, reg_scaling, dt)
    if biases:
        b, cb = fit_biases(r, c, centered, (by_row.counts, by_col.counts), (lam_u, lam_v))
    else:
        b, cb = torch.zeros(m, dtype=dt, device=device), torch.zeros(n, dtype=dt, device=device)
    generator = torch.Generator().manual_seed(seed)
    parts = None
    if sample_splitting:  # Ω_0 for the start, Ω_t for the t-th row half-step, Ω_{T+t} for the t-th column one
        parts = [p.to(device) for p in split_observations(v.numel(), 2 * max_iter + 1, seed)]
        p0 = parts[0]
        V = spectral_init(r[p0], c[p0], centered[p0], (m, n), k, generator)
    else:
        V = spectral_init(r, c, centered - b[r] - cb[c], (m, n), k, generator, index=(by_row, by_col))
    if trim is not None:
        V = trim_rows(V, trim)
    U = torch.zeros(m, k, dtype=dt, device=device)
    ones_m, ones_n = torch.ones(m, 1, dtype=dt, device=device), torch.ones(n, 1, dtype=dt, device=device)
    floor = rounding_floor(centered, dt)

    d = k + 1 if biases else k
    sketch_gen = torch.Generator().manual_seed(seed)
    row_step = _HalfStep(solver, by_row, lam_u, d, sketch_gen)
    col_step = _HalfStep(solver, by_col, lam_v, d, sketch_gen)
    # the targets in each side's CSR order, sorted once (a half-step then gathers only the other side's biases)
    centered_r, centered_c = centered.index_select(0, by_row.order), centered.index_select(0, by_col.order)
    progress = Progress(floor, tol, dt, start)

    def row_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The row half-step's design, targets (row CSR order) and warm start at the current factors."""
        if not biases:
            return V, centered_r, U
        return torch.cat([V, ones_n], 1), centered_r - cb.index_select(0, by_row.other), torch.cat([U, b[:, None]], 1)

    # Residual hand-off (CG solvers, all samples): the model's residual at the end of an iteration, computed in the
    # row side's CSR order, is both the objective's residual and the next row half-step's initial residual (its
    # CG then skips one sampled product); the column half-step then needs no residual of its own.
    handoff = solver != "exact" and parts is None
    residual = None
    row_in = row_inputs()
    for iterations in range(1, max_iter + 1):
        cg_tol = 0.0 if solver == "exact" else cg_tolerance(iterations, dt)
        if parts is None:
            x, s_row = row_step(*row_in, cg_tol, sse=False, ordered=True, residual0=residual)
            U, b = (x[:, :k], x[:, k]) if biases else (x, b)
            col_design = torch.cat([U, ones_m], 1) if biases else U
            col_target = centered_c - b.index_select(0, by_col.other) if biases else centered_c
            col_x0 = torch.cat([V, cb[:, None]], 1) if biases else V
            y, s_col = col_step(col_design, col_target, col_x0, cg_tol, sse=not handoff, ordered=True)
            V, cb = (y[:, :k], y[:, k]) if biases else (y, cb)
            row_in = row_inputs()
            if handoff:
                design_r, target_r, x0_r = row_in
                kept = by_row.buffer("handoff", dt)  # consumed by the next row half-step before it is rewritten
                residual = segment_dot(*by_row.csr, x0_r, design_r, out=kept).neg_().add_(target_r)
        else:
            pr, pc = parts[iterations], parts[max_iter + iterations]
            by_r, by_c = RowIndex(r[pr], c[pr], m), RowIndex(c[pc], r[pc], n)
            row_step = _HalfStep(solver, by_r, _lam(reg, by_r.counts, reg_scaling, dt), d, sketch_gen)
            col_step = _HalfStep(solver, by_c, _lam(reg, by_c.counts, reg_scaling, dt), d, sketch_gen)
            U, s_row = row_step(V, centered[pr], U, cg_tol, sse=False)
            V, s_col = col_step(U, centered[pc], V, cg_tol, sse=False)
        progress.solves.append(
            SolveEntry(
                iterations,
                cg_tol if s_row.cg_rows + s_col.cg_rows else 0.0,  # 0: no row was solved by CG
                max(s_row.iterations, s_col.iterations),
                s_row.unconverged + s_col.unconverged,
                s_row.exact_rows + s_col.exact_rows,
            )
        )
        if residual is not None:
            sse = float(torch.linalg.vector_norm(residual, dtype=torch.float64)) ** 2
        elif parts is None:  # the column half-step saw every observation: its residual is the objective's
            sse = s_col.sse
        else:
            sse = float((centered - (U.index_select(0, r) * V.index_select(0, c)).sum(1)).double().square().sum())
        val_rmse = None if val is None else val.rmse(U, V, b, cb, mean)
        used = solver if s_row.cg_rows + s_col.cg_rows else "exact"  # "auto" that solved every row exactly
        fit, lams = (U, V, b, cb), (lam_u, lam_v)
        if progress.record(
            iterations, sse, v.numel(), fit, lams, used, cg_tol, val_rmse=val_rmse, monotone=parts is None
        ):
            break
    if warn and not progress.converged:
        warnings.warn(
            f"complete() stopped at max_iter={max_iter} before the relative decrease reached tol={tol:g} "
            f"(last objective {progress.objective:.6g}); raise `max_iter` or `tol`, or pass warn=False",
            ConvergenceWarning,
            stacklevel=2,
        )
    return progress.result(
        (U, V, b, cb), mean, biases=biases, solver=solver, shape=(m, n), reg=reg, reg_scaling=reg_scaling
    )


def from_scipy(X: Any) -> tuple[Any, Any, Any, tuple[int, int]]:
    """``(rows, cols, values, shape)`` of a SciPy sparse matrix or array; every stored entry (explicit zeros and
    repeated entries included) is an observation.  SciPy is imported only here."""
    import scipy.sparse as sp

    if not sp.issparse(X):
        raise TypeError(f"`X` must be a SciPy sparse matrix or array, got {type(X).__name__}")
    coo = X.tocoo()
    return coo.row.astype("int64"), coo.col.astype("int64"), coo.data, (int(coo.shape[0]), int(coo.shape[1]))
