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

from precond.ot._log_sinkhorn import SinkhornState, annealing_levels, column_update, sweeps
from precond.ot._scaling import ScaledKernel, scaling_sweeps
from precond.ot._scaling import column_update as scaled_column_update
from precond.ot._sns import newton
from precond.ot._validate import check_count, check_positive, check_problem
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
    tol: float = 1e-9,
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
            finite, same total mass as ``b``.  Zero-mass points get zero plan rows and ``f_i = −inf``.
        b: target weights ``[m]``, same rules.
        M: cost matrix ``[n, m]``, finite.  Quote ``reg`` relative to the scale of ``M`` (e.g. ``M/M.max()``).
        reg: entropic regularization ε > 0 (POT's ``reg``; the SNS paper's ``η = 1/reg``).
        method: ``"sinkhorn"`` (default: Sinkhorn by matrix-vector products on a kernel re-formed at the
            current potentials whenever the scalings leave ``e^{±τ}``, with a log-domain fallback, so it never
            underflows either; see :mod:`precond.ot._scaling`), ``"sinkhorn_log"`` (every update a
            ``logsumexp``; the same iterates, ~9× slower per iteration on a CPU, kept as the reference) or
            ``"sns"`` (``"sinkhorn"`` warm-up, then sparse Newton, see :mod:`precond.ot._sns`).
        tol: stop when the marginal error ``‖P 1 − a‖₁ + ‖Pᵀ 1 − b‖₁`` is ``≤ tol``.  float32 bottoms out
            around ``1e-6``; use float64 for tighter tolerances.
        max_iter: cap on total iterations (Sinkhorn + Newton, annealing levels included).
        epsilon_scaling: warm-start with ε-annealing: Sinkhorn at ``max(epsilon0·scaling_factor^k, reg)``,
            each level until its error is ``≤ 1e-2`` or 100 iterations.  Applies to the SNS warm-up too.
        epsilon0: first level of the annealing (default: ``max(M) − min(M)``).
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
        and warns (unless ``warn=False``); it never raises.

    Raises:
        ValueError: bad shapes, negative / non-finite / unbalanced weights, NaN or inf in ``M``, ``reg ≤ 0``,
            unknown ``method`` or bad solver options; the message names the argument.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    a_t, b_t, m_t, reg = check_problem(a, b, M, reg, dtype)
    check_positive(tol, "tol")
    check_count(max_iter, "max_iter", minimum=0)
    check_positive(keep, "keep")
    check_positive(ridge, "ridge")
    check_positive(switch_ratio, "switch_ratio")
    check_count(n1_min, "n1_min", minimum=0)
    check_count(n1_max, "n1_max", minimum=0)
    if n1 is not None:
        check_count(n1, "n1", minimum=0)
    if cg_max_iter is not None:
        check_count(cg_max_iter, "cg_max_iter")
    if not (0.0 < scaling_factor < 1.0):
        raise ValueError(f"`scaling_factor` must be in (0, 1), got {scaling_factor!r}")
    if epsilon0 is not None:
        check_positive(epsilon0, "epsilon0")

    # Zero-mass points carry no constraint: solve on the support, embed the result afterwards.
    rows = torch.nonzero(a_t > 0).flatten()
    cols = torch.nonzero(b_t > 0).flatten()
    full = rows.numel() == a_t.numel() and cols.numel() == b_t.numel()
    a_s, b_s = (a_t, b_t) if full else (a_t[rows], b_t[cols])
    m_s = m_t if full else m_t[rows][:, cols]

    state = SinkhornState(u=torch.zeros_like(a_s), v=torch.zeros_like(b_s))
    log_a, log_b = a_s.log(), b_s.log()
    levels = [reg]
    if epsilon_scaling:
        eps0 = epsilon0 if epsilon0 is not None else float(m_s.max() - m_s.min())
        levels = annealing_levels(eps0, reg, scaling_factor)
    u, v = state.u, state.v
    plan_s: torch.Tensor | None = None
    status = "max_iter"
    for k, eps_k in enumerate(levels):
        if k:  # carry the potentials (in cost units) over to the next level
            u, v = u * levels[k - 1] / eps_k, v * levels[k - 1] / eps_k
        final = k == len(levels) - 1
        level_tol, level_iter = (tol, max(0, max_iter - state.iterations)) if final else (1e-2, 100)
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
            rule = _switch_rule(tol, n1, n1_min, n1_max, switch_ratio) if method == "sns" and final else None
            done = scaling_sweeps(state, ker, a_s, b_s, log_a, log_b, level_tol, level_iter, stop=rule)
            if rule is not None and not done and math.isfinite(state.error) and state.iterations < max_iter:
                status = newton(
                    state, ker, a_s, b_s, log_a, log_b, tol, max_iter, keep, adaptive_density, ridge, cg_max_iter
                )
                done = status == "converged"
            u, v = ker.potentials()
            state.absorptions += ker.absorptions
            if final:  # diag(s) K diag(t), in K's memory: two multiply passes instead of an exp pass
                plan_s = ker.plan(out=ker.kernel)
            del ker
        if final and done:
            status = "converged"
    state.u, state.v = u, v

    if plan_s is None:
        plan_s = torch.exp(state.u[:, None] + state.v[None, :] + neg_mr)
    err = float((plan_s.sum(1) - a_s).abs().sum() + (plan_s.sum(0) - b_s).abs().sum())
    # The in-loop error comes from logsumexp, the final one from the plan's sums: allow for that rounding.
    slack = 64 * torch.finfo(plan_s.dtype).eps * float(a_s.sum())
    converged = status == "converged" and err <= max(tol * 1.01, tol + slack)
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
            "stalled": "the Newton line search failed repeatedly (tolerance below the attainable precision?)",
            "nonfinite": "non-finite values appeared",
            "converged": "rounding left the final plan above tol",
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
        cost=float(torch.dot(plan.reshape(-1), m_t.reshape(-1))),
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
    )


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
