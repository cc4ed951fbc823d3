"""Newton stage of Sinkhorn–Newton–Sparse (Tang et al., ICLR 2024) on the concave dual potential.

In scaled potentials ``u = f/reg``, ``v = g/reg`` the dual objective (divided by ``reg``) is

    D(u, v) = ⟨a, u⟩ + ⟨b, v⟩ − Σ_ij P_ij,       P_ij = exp(u_i + v_j − M_ij/reg),

with gradient ``(a − P1, b − Pᵀ1)`` (the marginal violations) and Hessian ``−H``,
``H = [[diag(P1), P], [Pᵀ, diag(Pᵀ1)]] ⪰ 0``, whose null vector ``(1, −1)`` is the gauge ``(u + c, v − c)``.

Each Newton iteration:

1. sparsify: keep the ``⌈keep·max(n, m)⌉`` largest entries of ``P`` (the paper's rule, ``λ = keep/n``) plus
   the largest entry of every row and column, giving ``S``; the diagonal blocks stay exact (full row and
   column sums), so ``H_S = [[D1, S], [Sᵀ, D2]]`` is ``H`` minus a PSD-preserving drop;
2. solve ``(H_S + δI) Δ = ∇D`` by Jacobi-preconditioned CG (:func:`precond.linalg.pcg`; matvecs by
   ``index_add`` on the kept entries), with a Levenberg–Marquardt ridge ``δ = ridge·‖∇D‖₁·max(a, b)`` that
   makes the system definite even when sparsification disconnects the bipartite graph, and an inexact-Newton
   relative tolerance ``min(0.1, ‖∇D‖₁)``; the step's ``(1, −1)`` component (which does not change ``P``) is
   projected out, so the potentials keep their gauge;
3. backtracking line search (Armijo, ``c = 1e-4``, halving) on ``D``; near the optimum ``D`` is flat to
   rounding (``ΣP ≈ 1``), so a step that does not measurably lower ``D`` is also accepted when it lowers the
   marginal error;
4. adaptive density (optional): ``keep`` doubles after a step that needed backtracking or reduced the
   marginal error by less than ``SLOW_RATIO`` (the dropped mass is then what limits the Newton rate);
5. safeguard: after a weak step (``α < 1/4`` or less than 10% error reduction) or a failed line search,
   ``SAFEGUARD_SWEEPS`` Sinkhorn iterations are run (a failure also raises the ridge ×10); three failures
   in a row stop the solver as stalled.
"""

from __future__ import annotations

import math

import torch

from precond.linalg import pcg
from precond.ot._log_sinkhorn import SinkhornState, column_update, sweeps

ARMIJO_C = 1e-4
MAX_BACKTRACKS = 12
SAFEGUARD_SWEEPS = 10
MAX_FAILURES = 3
#: A Newton step that only shrinks the marginal error by this factor (or worse) densifies the Hessian.
SLOW_RATIO = 0.25
#: Accepted steps with ``α < WEAK_STEP`` or error ratio above ``WEAK_RATIO`` are followed by Sinkhorn sweeps.
WEAK_STEP = 0.25
WEAK_RATIO = 0.9


class _Eval:
    """Plan, sums, objective and gradient at one iterate (one dense ``O(nm)`` pass)."""

    def __init__(
        self, u: torch.Tensor, v: torch.Tensor, neg_mr: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> None:
        plan = torch.add(u[:, None], v[None, :])
        plan.add_(neg_mr).exp_()
        self.plan = plan
        self.row = plan.sum(1)
        self.col = plan.sum(0)
        self.grad_u = a - self.row
        self.grad_v = b - self.col
        self.error = float(self.grad_u.abs().sum() + self.grad_v.abs().sum())
        self.objective = float((a * u).sum() + (b * v).sum() - self.row.sum())


def sparsify(plan: torch.Tensor, keep: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, columns and values of the kept entries: global top-k plus every row's and column's maximum."""
    n, m = plan.shape
    k = min(n * m, max(1, math.ceil(keep * max(n, m))))
    flat = plan.reshape(-1)
    rho = torch.topk(flat, k, sorted=False).values.min()
    mask = plan >= rho
    mask |= plan >= plan.amax(dim=1, keepdim=True)
    mask |= plan >= plan.amax(dim=0, keepdim=True)
    rows, cols = mask.nonzero(as_tuple=True)
    return rows, cols, plan[rows, cols]


def newton_step(
    ev: _Eval,
    keep: float,
    ridge: float,
    cg_max_iter: int | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Approximate Newton direction ``(Δu, Δv)`` from the sparsified Hessian; also returns CG iterations."""
    n, m = ev.plan.shape
    rows, cols, vals = sparsify(ev.plan, keep)
    scale = float(torch.maximum(ev.row.max(), ev.col.max()))
    delta = ridge * ev.error * scale
    d1 = ev.row + delta
    d2 = ev.col + delta
    inv_diag = 1.0 / torch.cat([d1, d2]).clamp_min(torch.finfo(d1.dtype).tiny)

    def matvec(x: torch.Tensor) -> torch.Tensor:
        xu, xv = x[:n], x[n:]
        out_u = d1 * xu
        out_u = out_u.index_add(0, rows, vals * xv[cols])
        out_v = d2 * xv
        out_v = out_v.index_add(0, cols, vals * xu[rows])
        return torch.cat([out_u, out_v])

    rhs = torch.cat([ev.grad_u, ev.grad_v])
    rtol = max(min(0.1, ev.error), 1e-13)
    step, info = pcg(matvec, rhs, precond=inv_diag, tol=rtol, max_iter=cg_max_iter)
    du, dv = step[:n], step[n:]
    shift = (du.sum() - dv.sum()) / (n + m)
    return du - shift, dv + shift, info.iterations


def newton(
    state: SinkhornState,
    a: torch.Tensor,
    b: torch.Tensor,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    neg_mr: torch.Tensor,
    tol: float,
    max_iter: int,
    keep: float,
    adaptive_density: bool,
    ridge: float,
    cg_max_iter: int | None,
) -> str:
    """Newton iterations until the marginal error is ``≤ tol`` or ``state.iterations`` reaches ``max_iter``.

    Returns ``"converged"``, ``"max_iter"``, ``"stalled"`` (repeated line-search failures) or ``"nonfinite"``.
    """
    ev = _Eval(state.u, state.v, neg_mr, a, b)
    state.evaluations += 1
    state.record(ev.error, "newton")
    keep_now = keep
    failures = 0
    ridge_now = ridge
    while True:
        if ev.error <= tol:
            return "converged"
        if not math.isfinite(ev.error):
            return "nonfinite"
        if state.iterations >= max_iter:
            return "max_iter"
        du, dv, cg_its = newton_step(ev, keep_now, ridge_now, cg_max_iter)
        state.cg_iterations += cg_its
        slope = float((ev.grad_u * du).sum() + (ev.grad_v * dv).sum())
        total = float(ev.plan.numel())
        del ev.plan
        alpha = 1.0
        accepted: _Eval | None = None
        for _ in range(MAX_BACKTRACKS):
            trial = _Eval(state.u + alpha * du, state.v + alpha * dv, neg_mr, a, b)
            state.evaluations += 1
            if math.isfinite(trial.objective) and math.isfinite(trial.error):
                armijo = trial.objective >= ev.objective + ARMIJO_C * alpha * slope
                flat = trial.objective >= ev.objective - 1e-13 * (1.0 + abs(ev.objective))
                if armijo or (flat and trial.error < ev.error):
                    accepted = trial
                    break
            del trial
            alpha *= 0.5
        state.newton_iterations += 1
        if accepted is not None:
            previous = ev.error
            state.u = state.u + alpha * du
            state.v = state.v + alpha * dv
            ev = accepted
            failures = 0
            ridge_now = max(ridge, 0.5 * ridge_now)
            if adaptive_density and (alpha < 1.0 or accepted.error > SLOW_RATIO * previous):
                keep_now = min(2.0 * keep_now, total)
            state.record(ev.error, "newton")
            if alpha >= WEAK_STEP and ev.error <= WEAK_RATIO * previous:
                continue
            # A weak step (heavy damping or little progress): still far from Newton's basin, interleave Sinkhorn.
        else:
            failures += 1
            state.record(ev.error, "newton")
            if failures >= MAX_FAILURES:
                return "stalled"
            ridge_now *= 10.0
            if adaptive_density:
                keep_now = min(2.0 * keep_now, total)
        # Safeguard (failed or weak step): a few Sinkhorn sweeps, which always make progress.
        column_update(state, log_b, neg_mr)
        budget = min(SAFEGUARD_SWEEPS, max(0, max_iter - state.iterations))
        sweeps(state, log_a, log_b, a, neg_mr, tol, budget)
        ev = _Eval(state.u, state.v, neg_mr, a, b)
        state.evaluations += 1
