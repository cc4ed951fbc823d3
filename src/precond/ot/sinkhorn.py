"""Public entropic-OT solvers: :func:`sinkhorn` (``"sinkhorn"``, ``"sinkhorn_log"`` or ``"sns"``), :func:`sinkhorn2`.

Problem (POT's convention, ``reg`` = ε):

    min_P ⟨P, M⟩ + reg · Σ_ij P_ij log P_ij    s.t.  P 1 = a,  Pᵀ 1 = b,

whose solution is ``P_ij = exp((f_i + g_j − M_ij) / reg)`` for dual potentials ``(f, g)``; POT's
``ot.bregman.sinkhorn_log`` returns ``log_u = f/reg`` and ``log_v = g/reg``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from precond.ot._log_sinkhorn import SinkhornState, annealing_levels, column_update, stall_floor, sweeps
from precond.ot._scaling import ScaledKernel, scaling_sweeps
from precond.ot._scaling import column_update as scaled_column_update
from precond.ot._sns import newton
from precond.ot._validate import balance, check_count, check_positive, check_problem, default_tol
from precond.ot.result import ConvergenceWarning, OTResult

METHODS = ("sinkhorn", "sinkhorn_log", "sns")


def _switch_rule(tol: float, n1: int | None, n1_min: int, n1_max: int, switch_ratio: float) -> Any:
    """SNS's warm-up stopping rule (see :func:`sinkhorn`)."""

    def stop(state: SinkhornState, errors: list[float]) -> bool:
        k = len(errors) - 1  # iterations done in this run
        if n1 is not None:
            return k >= n1
        if k >= n1_max:
            return True
        if k < n1_min:
            return False
        window = min(10, k)
        old, new = errors[-1 - window], errors[-1]
        if not (old > 0 and new > 0) or new >= old:
            return True  # Sinkhorn is not making progress
        rate = (new / old) ** (1.0 / window)
        remaining = math.log(new / tol) / -math.log(rate)
        return remaining > switch_ratio

    return stop


def sinkhorn(
    a: Any,
    b: Any,
    M: Any,
    reg: float,
    method: str = "sinkhorn",
    tol: float | None = None,
    max_iter: int = 100_000,
    *,
    epsilon_scaling: bool = False,
    epsilon0: float | None = None,
    scaling_factor: float = 0.5,
    n1: int | None = None,
    n1_min: int = 10,
    n1_max: int = 2000,
    switch_ratio: float = 20.0,
    keep: float = 2.0,
    adaptive_density: bool = True,
    ridge: float = 1e-2,
    cg_max_iter: int | None = None,
    sparse_plan: bool = False,
    sparse_threshold: float = 1e-12,
    dtype: torch.dtype | None = None,
    warn: bool = True,
) -> OTResult:
    r"""Entropic optimal transport between histograms ``a`` and ``b`` for the cost ``M`` (POT's conventions).

    Args:
        a: source weights ``[n]`` (NumPy or torch); ``None`` or empty means uniform ``1/n``.  Nonnegative,
            finite, same total mass as ``b`` (within a relative ``1e-6``).  Zero-mass points get zero plan rows
            and ``f_i = −inf``.
        b: target weights ``[m]``, same rules.  What is left of a mass mismatch is removed by solving with
            ``b · Σa/Σb`` (:attr:`OTResult.b_scale`): otherwise the marginal error could never fall below
            ``|Σa − Σb|`` (weights normalized in float32 differ by ~1e-7) and any smaller ``tol`` would spin.
        M: cost matrix ``[n, m]`` of real numbers or ``+inf`` (a forbidden pair: ``P_ij = 0`` exactly, in every
            method), any strides.  Every point with mass needs a finite cost to some point with mass (else
            ValueError); a pattern that is feasible but forces an allowed pair to carry nothing in every plan
            (e.g. ``[[0, inf], [1, 0]]`` with uniform weights) converges only sublinearly and ends at
            ``max_iter``.  Quote ``reg`` relative to the scale of ``M`` (e.g. ``M/M.max()``).
        reg: entropic regularization ε > 0 (POT's ``reg``; the SNS paper's ``η = 1/reg``).
        method: ``"sinkhorn"`` (default: Sinkhorn by matrix-vector products on a kernel re-formed at the
            current potentials whenever the scalings leave ``e^{±τ}``, with a log-domain fallback, so it never
            underflows either; see :mod:`precond.ot._scaling`), ``"sinkhorn_log"`` (every update a
            ``logsumexp``; the same iterates, ~9× slower per iteration on a CPU, kept as the reference) or
            ``"sns"`` (``"sinkhorn"`` warm-up, then sparse Newton, see :mod:`precond.ot._sns`).
        tol: stop when the marginal error ``‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁`` is ``≤ tol``.  ``None`` (default):
            dtype-aware, ``1e-9·Σa`` in float64 and ``1e-5·Σa`` in float32, whose rounding floor is a few
            ``1e-7``.  A ``tol`` below the attainable precision does not spin: once the error has stopped
            setting new lows below the rounding floor for 50 iterations the solver stops with
            ``status="stalled"`` (see :mod:`precond.ot._log_sinkhorn`).
        max_iter: cap on total iterations (Sinkhorn + Newton, annealing levels included: one budget shared by
            all ε levels, so ``iterations ≤ max_iter`` always).
        epsilon_scaling: warm-start with ε-annealing: Sinkhorn at ``max(epsilon0·scaling_factor^k, reg)``,
            each level until its error is ``≤ 1e-2`` or 100 iterations (or the rest of ``max_iter``).  Applies
            to the SNS warm-up too.
        epsilon0: first level of the annealing (default: ``max(M) − min(M)`` over the finite costs).
        scaling_factor: ratio between annealing levels, in ``(0, 1)``.
        n1: SNS only: a fixed number of warm-up Sinkhorn iterations (the paper's ``N1``).  ``None`` (default)
            uses the adaptive switch rule: after ``n1_min`` iterations, Sinkhorn's linear rate ``r`` over the
            last 10 iterations is measured and the solver switches to Newton as soon as finishing with
            Sinkhorn would take more than ``switch_ratio`` iterations (``log(err/tol)/(−log r) > switch_ratio``)
            or the error stops decreasing; at the latest after ``n1_max`` iterations.
        n1_min, n1_max, switch_ratio: the adaptive switch rule's constants (``switch_ratio`` ≈ the cost of
            the Newton stage in Sinkhorn iterations: near the optimum 2–3 Newton steps finish, each costing
            about 5–20 Sinkhorn iterations).  Defaults measured on the benchmark grid (n = 2000): against
            ``n1_min = 20, switch_ratio = 100`` the same wall-clock within noise, and far fewer iterations
            where Sinkhorn needs ~50–200 (Gaussian clouds ε = 1e-2: 13 against 53; random assignment
            ε = 1e-3: 25 against 51; 1-D W2 ε = 1e-2: 16 against 25).  At n = 500 Newton's fixed costs
            weigh more: up to ~30% (a few ms) slower there.
        keep: SNS sparsity: keep the ``⌈keep·max(n, m)⌉`` largest plan entries (the paper's ``λ = keep/n``)
            plus every row's and column's largest entry.
        adaptive_density: SNS: keep more entries when needed so that the dropped plan mass is at most 1% of
            the marginal error (the Hessian error then shrinks with the gradient).
        ridge: SNS: initial Levenberg–Marquardt factor ``μ``; ``μ·‖∇‖₁·diag(H)`` is added to the sparse
            Hessian, and ``μ`` adapts as a trust region.
        cg_max_iter: SNS: CG iteration cap per Newton step (default ``2(n + m)``).
        sparse_plan: SNS: also return ``plan_sparse`` (entries ``> sparse_threshold·max P``, COO).
        sparse_threshold: relative threshold for ``plan_sparse``.
        dtype: ``torch.float64`` (default, unless ``M`` is float32) or ``torch.float32``.
        warn: emit a :class:`ConvergenceWarning` when ``tol`` is not reached.

    Returns:
        An :class:`OTResult` of torch tensors on ``M``'s device.  Non-convergence sets ``converged=False``
        and ``status`` (``"max_iter"``, ``"stalled"``, ``"nonfinite"`` or ``"rounding"``) and warns (unless
        ``warn=False``); it never raises.  ``converged`` means the error recomputed in float64 from the
        returned plan is ``≤ tol``.

    Raises:
        ValueError: bad shapes, negative / non-finite / unbalanced weights, NaN or ``−inf`` in ``M``, a point
            with mass whose costs are all ``+inf`` (infeasible), ``reg ≤ 0``, unknown ``method`` or bad solver
            options; the message names the argument.
        TypeError: ``reg``, ``tol``, ``max_iter`` or another option of the wrong type (a string, a bool, a
            float count); Python and NumPy scalars are accepted.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    a_t, b_t, m_t, reg = check_problem(a, b, M, reg, dtype)
    b_t, b_scale = balance(a_t, b_t)
    mass = float(a_t.sum(dtype=torch.float64))
    tol = default_tol(m_t.dtype, mass) if tol is None else check_positive(tol, "tol")
    max_iter = check_count(max_iter, "max_iter", minimum=0)
    keep = check_positive(keep, "keep")
    ridge = check_positive(ridge, "ridge")
    switch_ratio = check_positive(switch_ratio, "switch_ratio")
    n1_min = check_count(n1_min, "n1_min", minimum=0)
    n1_max = check_count(n1_max, "n1_max", minimum=0)
    if n1 is not None:
        n1 = check_count(n1, "n1", minimum=0)
    if cg_max_iter is not None:
        cg_max_iter = check_count(cg_max_iter, "cg_max_iter")
    scaling_factor = check_positive(scaling_factor, "scaling_factor")
    if not scaling_factor < 1.0:
        raise ValueError(f"`scaling_factor` must be in (0, 1), got {scaling_factor!r}")
    if epsilon0 is not None:
        epsilon0 = check_positive(epsilon0, "epsilon0")
    # The in-loop error is summed in the solver's dtype, the reported one in float64 from the plan: aim a few
    # ulps of the mass below tol so that a run that stops as converged also is converged by the final check.
    margin = 8 * torch.finfo(m_t.dtype).eps * mass
    loop_tol = tol - margin if tol > 2 * margin else tol

    # Zero-mass points carry no constraint: solve on the support, embed the result afterwards.
    rows = torch.nonzero(a_t > 0).flatten()
    cols = torch.nonzero(b_t > 0).flatten()
    full = rows.numel() == a_t.numel() and cols.numel() == b_t.numel()
    a_s, b_s = (a_t, b_t) if full else (a_t[rows], b_t[cols])
    m_s = m_t if full else m_t[rows][:, cols]

    # +inf costs (forbidden pairs) give K = exp(−inf) = 0 and logsumexp terms of −inf: no special path needed.
    state = SinkhornState(u=torch.zeros_like(a_s), v=torch.zeros_like(b_s), floor=stall_floor(m_t.dtype, mass))
    log_a, log_b = a_s.log(), b_s.log()
    levels = [reg]
    if epsilon_scaling:
        if epsilon0 is not None:
            eps0 = epsilon0
        else:
            eps0 = float(m_s.max() - m_s.min())
            if not math.isfinite(eps0):  # +inf costs: the span of the finite ones
                finite = m_s[torch.isfinite(m_s)]
                eps0 = float(finite.max() - finite.min())
        levels = annealing_levels(eps0, reg, scaling_factor)
    u, v = state.u, state.v
    plan_s: torch.Tensor | None = None
    status = "max_iter"
    for k, eps_k in enumerate(levels):
        if k:  # carry the potentials (in cost units) over to the next level
            u, v = u * levels[k - 1] / eps_k, v * levels[k - 1] / eps_k
        final = k == len(levels) - 1
        budget = max(0, max_iter - state.iterations)  # one budget for all levels
        level_tol, level_iter = (loop_tol, budget) if final else (1e-2 * mass, min(100, budget))
        state.restart_progress()
        if method == "sinkhorn_log":
            neg_mr = m_s / (-eps_k)
            state.u, state.v = u, v
            column_update(state, log_b, neg_mr)
            done = sweeps(state, log_a, log_b, a_s, neg_mr, level_tol, level_iter)
            u, v = state.u, state.v
        else:
            ker = ScaledKernel(m_s, eps_k, u, v, numpy_blas=method == "sinkhorn")
            state.evaluations += 1
            scaled_column_update(ker, b_s, log_a, log_b)
            rule = _switch_rule(loop_tol, n1, n1_min, n1_max, switch_ratio) if method == "sns" and final else None
            done = scaling_sweeps(state, ker, a_s, b_s, log_a, log_b, level_tol, level_iter, stop=rule)
            if rule is not None and not done and math.isfinite(state.error) and state.iterations < max_iter:
                status = newton(
                    state, ker, a_s, b_s, log_a, log_b, loop_tol, max_iter, keep, adaptive_density, ridge, cg_max_iter
                )
                done = status == "converged"
            u, v = ker.potentials()
            state.absorptions += ker.absorptions
            if final:  # diag(s) K diag(t), in K's memory: two multiply passes instead of an exp pass
                plan_s = ker.plan(out=ker.kernel)
            del ker
        if final and done:
            status = "converged"
        elif final and status == "max_iter" and state.stalled:
            status = "stalled"
        elif final and status == "max_iter" and not math.isfinite(state.error):
            status = "nonfinite"
    state.u, state.v = u, v

    if plan_s is None:
        plan_s = torch.exp(state.u[:, None] + state.v[None, :] + neg_mr)
    f64 = torch.float64
    err = float(
        (plan_s.sum(1, dtype=f64) - a_s.to(f64)).abs().sum() + (plan_s.sum(0, dtype=f64) - b_s.to(f64)).abs().sum()
    )
    if status == "converged" and not err <= tol:
        status = "rounding"
    converged = status == "converged"
    f_s, g_s = reg * state.u, reg * state.v
    if full:
        plan, f, g = plan_s, f_s, g_s
    else:
        plan = torch.zeros_like(m_t)
        plan[rows[:, None], cols[None, :]] = plan_s
        f = torch.full_like(a_t, -math.inf).index_copy(0, rows, f_s)
        g = torch.full_like(b_t, -math.inf).index_copy(0, cols, g_s)
    plan_sparse = None
    if sparse_plan and method == "sns":
        plan_sparse = torch.where(plan > sparse_threshold * plan.max(), plan, torch.zeros_like(plan)).to_sparse()
    if not converged and warn:
        why = {
            "max_iter": f"reached max_iter={max_iter}",
            "stalled": f"the error stopped decreasing (tol below the attainable precision of {m_t.dtype}?)",
            "nonfinite": "non-finite values appeared",
            "rounding": "rounding left the final plan above tol",
        }[status]
        warnings.warn(
            f"{method} did not converge: {why}; marginal error {err:.3e} > tol={tol:.1e} after "
            f"{state.iterations} iterations (reg={reg:g}). Increase max_iter or reg, or use method='sns'.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return OTResult(
        plan=plan,
        plan_sparse=plan_sparse,
        cost=_cost(plan, m_t),
        f=f,
        g=g,
        marginal_error=err,
        iterations=state.iterations,
        sinkhorn_iterations=state.sinkhorn_iterations,
        newton_iterations=state.newton_iterations,
        converged=converged,
        history=state.history,
        method=method,
        reg=reg,
        cg_iterations=state.cg_iterations,
        evaluations=state.evaluations,
        absorptions=state.absorptions,
        status=status,
        b_scale=b_scale,
    )


def _cost(plan: torch.Tensor, cost: torch.Tensor) -> float:
    """``⟨P, M⟩``, skipping the ``+inf`` entries of ``M`` (where ``P`` is exactly 0; ``0 · inf`` is NaN)."""
    value = float(torch.dot(plan.reshape(-1), cost.reshape(-1)))
    if math.isnan(value):  # only then pay for a mask
        value = float(torch.dot(plan.reshape(-1), torch.where(torch.isinf(cost), 0.0, cost).reshape(-1)))
    return value


def sinkhorn2(a: Any, b: Any, M: Any, reg: float, method: str = "sinkhorn", **kwargs: Any) -> Any:
    """Entropic-OT value: ``⟨P, M⟩`` of :func:`sinkhorn`'s plan (POT's ``sinkhorn2`` value); same arguments, plus:

    * ``b`` of shape ``[m, k]`` (``k ≥ 2``): ``k`` target histograms solved together (POT's multi-column ``b``,
      :mod:`precond.ot._batched`); returns the ``k`` values.  Options: ``tol``, ``max_iter``, ``dtype``, ``warn``.
    * ``objective="entropic"``: return ``⟨P, M⟩ + reg Σ P log P`` instead (``ot.solve``'s ``value``).

    Returns a float (``[k]`` NumPy array) for NumPy/list inputs; a 0-d (``[k]``) tensor in ``M``'s dtype if any
    input is a torch tensor, differentiable in every input that requires grad: exact gradients at the optimal
    potentials, by the envelope theorem (``"entropic"``) or implicit differentiation (``"linear"``), see
    :mod:`precond.ot._autograd` for the formulas and the ``(a, b)`` gauge convention.
    """
    from precond.ot._loss import sinkhorn2 as value  # local: _loss imports this module

    return value(a, b, M, reg, method=method, **kwargs)
