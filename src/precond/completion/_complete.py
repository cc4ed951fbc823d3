"""``complete``: low-rank matrix completion by alternating ridge least squares (ALS) with exact row solves."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from precond.completion._biases import fit_biases
from precond.completion._init import spectral_init
from precond.completion._result import CompletionResult, HistoryEntry
from precond.completion._solve import RowIndex, ridge_rows
from precond.completion._validate import (
    DUPLICATES,
    REG_SCALINGS,
    check_choice,
    check_int,
    check_observations,
    check_real,
    check_shape,
)

#: Row solvers offered now.  The issue's approximate solvers (``"sketch_cg"``, ``"cg"``, ``"auto"``) are not built.
SOLVERS = ("exact",)


def _penalty(lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (lam.double() * x.double().square().sum(1)).sum()


def complete(
    rows: Any,
    cols: Any,
    values: Any,
    shape: tuple[int, int],
    rank: int,
    *,
    reg: float = 0.1,
    solver: str = "exact",
    max_iter: int = 50,
    tol: float = 1e-6,
    biases: bool = False,
    validation: tuple[Any, Any, Any] | None = None,
    seed: int = 0,
    reg_scaling: str = "none",
    duplicates: str = "error",
    dtype: torch.dtype | None = None,
) -> CompletionResult:
    """Fit ``R ≈ U Vᵀ`` (plus ``mean + row_bias + col_bias`` with ``biases=True``) to observed entries.

    Minimizes the ALS objective (Zhou et al. 2008, eq. 3; Koren–Bell–Volinsky 2009, eq. 5 for the biases)

        Σ_{(i,j)∈Ω} (r_ij − μ − b_i − c_j − u_iᵀ v_j)² + Σ_i λ_i (‖u_i‖² + b_i²) + Σ_j λ_j (‖v_j‖² + c_j²)

    with ``λ_i = reg`` (``reg_scaling="none"``) or ``λ_i = reg · |Ω_i|`` (``"count"``: ALS-WR, Spark MLlib's
    scaling); ``μ`` is the observed mean and the biases are present only with ``biases=True`` (otherwise nothing is
    centered, so an exactly rank-``k`` matrix stays rank ``k``).

    Start: with biases, ``b, c`` of the bias-only ridge model (:mod:`precond.completion._biases`); then ``V`` from a
    randomized truncated SVD of the ``|Ω|/(mn)``-rescaled observed matrix of ``r − μ − b_i − c_j`` (of ``r`` without
    biases), see :mod:`precond.completion._init`.  Each iteration solves every row's ``(u_i, b_i)`` exactly given
    ``V, c`` (batched Cholesky on the normal equations), then every column's ``(v_j, c_j)`` given ``U, b``; the
    objective never increases.  It stops when the objective's relative decrease is ``≤ tol`` or it reaches the
    rounding floor ``(16 ε)² Σ (r − μ)²`` (``converged=True``), or after ``max_iter`` iterations.

    Args:
        rows, cols: integer indices ``[|Ω|]`` of the observed entries (NumPy, torch or lists).  For a SciPy sparse
            matrix use :func:`precond.completion.from_scipy`; explicit zeros in it are observations.
        values: observed values ``[|Ω|]``, finite.
        shape: ``(m, n)``.
        rank: ``k``, ``1 ≤ k ≤ min(m, n)``.
        reg: ridge weight ``≥ 0``.  With ``reg = 0`` a row with fewer than ``k`` (``k + 1`` with biases)
            observations takes the minimum-norm least-squares solution.
        solver: ``"exact"`` (the only solver so far).
        max_iter, tol: iteration cap and relative-decrease tolerance.
        biases: fit ``μ``, row and column biases.
        validation: optional ``(rows, cols, values)`` held-out entries; their RMSE is recorded each iteration.
        seed: seed of the random probe of the initial SVD (the fit is deterministic given it).
        reg_scaling: ``"none"`` or ``"count"`` (see above).
        duplicates: ``"error"`` (default) refuses repeated ``(row, col)`` pairs; ``"mean"`` averages them.
        dtype: ``torch.float64`` or ``torch.float32``; default float32 if ``values`` is float32, else float64.

    Cold start: a row (column) without observations gets a zero factor and zero bias, so its predictions are
    ``μ + c_j`` (``μ + b_i``), or 0 without biases; the other rows are unaffected.

    Memory: ``O(|Ω| (k + 10))`` for the initial SVD and the residuals, plus the blocks of :mod:`._solve`
    (at most ``2²⁴`` numbers of outer products, about 134 MB in float64).

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
        raise ValueError(
            f"`solver` must be one of {', '.join(map(repr, SOLVERS))} (the solvers built so far), got {solver!r}"
        )
    if not isinstance(biases, bool):
        raise TypeError(f"`biases` must be True or False, got {biases!r}")
    check_choice(reg_scaling, "reg_scaling", REG_SCALINGS)
    check_choice(duplicates, "duplicates", DUPLICATES)
    r, c, v = check_observations(rows, cols, values, (m, n), dtype, duplicates)
    dt, device = v.dtype, v.device
    val = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 3:
            raise ValueError("`validation` must be a tuple (rows, cols, values) of held-out entries")
        val = check_observations(*validation, (m, n), dt, "keep", prefix="validation ")
        val = (val[0].to(device), val[1].to(device), val[2].to(device))

    mean = float(v.double().mean()) if biases else 0.0
    centered = v - mean
    by_row, by_col = RowIndex(r, c, m), RowIndex(c, r, n)
    if reg_scaling == "count":
        lam_u, lam_v = reg * by_row.counts.to(dt), reg * by_col.counts.to(dt)
    else:
        lam_u = torch.full((m,), reg, dtype=dt, device=device)
        lam_v = torch.full((n,), reg, dtype=dt, device=device)
    if biases:
        b, cb = fit_biases(r, c, centered, (by_row.counts, by_col.counts), (lam_u, lam_v))
    else:
        b, cb = torch.zeros(m, dtype=dt, device=device), torch.zeros(n, dtype=dt, device=device)
    generator = torch.Generator().manual_seed(seed)
    V = spectral_init(r, c, centered - b[r] - cb[c], (m, n), k, generator)
    U = torch.zeros(m, k, dtype=dt, device=device)
    ones_m, ones_n = torch.ones(m, 1, dtype=dt, device=device), torch.ones(n, 1, dtype=dt, device=device)
    floor = (16 * torch.finfo(dt).eps) ** 2 * float(centered.double().square().sum())

    history: list[HistoryEntry] = []
    previous = math.inf
    converged = False
    objective = math.inf
    iterations = 0
    for iterations in range(1, max_iter + 1):
        if biases:
            x = ridge_rows(by_row, torch.cat([V, ones_n], 1), centered - cb[c], lam_u)
            U, b = x[:, :k], x[:, k]
            y = ridge_rows(by_col, torch.cat([U, ones_m], 1), centered - b[r], lam_v)
            V, cb = y[:, :k], y[:, k]
        else:
            U = ridge_rows(by_row, V, centered, lam_u)
            V = ridge_rows(by_col, U, centered, lam_v)
        resid = (centered - (U[r] * V[c]).sum(1) - b[r] - cb[c]).double()
        sse = float(resid.square().sum())
        penalty = _penalty(lam_u, U) + _penalty(lam_v, V) + (lam_u.double() * b.double().square()).sum()
        objective = sse + float(penalty + (lam_v.double() * cb.double().square()).sum())
        if not math.isfinite(objective):
            raise FloatingPointError(
                f"the objective became non-finite at iteration {iterations} ({dt}); rescale `values` or use float64"
            )
        val_rmse = None
        if val is not None:
            vr, vc, vv = val
            pred = (U[vr] * V[vc]).sum(1) + b[vr] + cb[vc] + mean
            val_rmse = math.sqrt(float((vv - pred).double().square().mean()))
        history.append((iterations, math.sqrt(sse / v.numel()), val_rmse, time.perf_counter() - start))
        if objective <= floor or (math.isfinite(previous) and previous - objective <= tol * previous):
            converged = True
            break
        previous = objective

    return CompletionResult(
        U=U,
        V=V,
        row_bias=b if biases else None,
        col_bias=cb if biases else None,
        mean=mean if biases else None,
        history=history,
        iterations=iterations,
        converged=converged,
        solver=solver,
        objective=objective,
        shape=(m, n),
        rank=k,
        reg=reg,
        reg_scaling=reg_scaling,
    )


def from_scipy(X: Any) -> tuple[Any, Any, Any, tuple[int, int]]:
    """``(rows, cols, values, shape)`` of a SciPy sparse matrix or array; every stored entry (explicit zeros and
    repeated entries included) is an observation.  SciPy is imported only here."""
    import scipy.sparse as sp

    if not sp.issparse(X):
        raise TypeError(f"`X` must be a SciPy sparse matrix or array, got {type(X).__name__}")
    coo = X.tocoo()
    return coo.row.astype("int64"), coo.col.astype("int64"), coo.data, (int(coo.shape[0]), int(coo.shape[1]))
