"""Sinkhorn for one source ``a`` and several targets ``B = [b_1 … b_k]`` at once (POT's multi-column ``b``).

With a shared cost ``M`` the ``k`` problems share the kernel: in the scaling domain (see
:mod:`precond.ot._scaling`) the scalings become matrices ``S [n, k]``, ``T [m, k]`` and a Sinkhorn iteration
is two matrix-matrix products, ``T ← B / (Kᵀ S)`` and ``S ← a / (K T)``.  The kernel
``K = exp(u₀ ⊕ v₀ − M/reg)`` is formed at base potentials shared by the ``k`` problems; when the scalings
leave ``e^{±τ}`` their mean over the histograms is absorbed into ``(u₀, v₀)``.  If the histograms' own
potentials spread further apart than one kernel can represent (or a product under/overflows), the batch falls
back to ``k`` separate solves of :func:`precond.ot.sinkhorn`, which absorb per problem.

``+inf`` costs (forbidden pairs) are native here: their kernel entries are exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from precond.ot._scaling import absorb_bound
from precond.ot._validate import check_problem
from precond.ot.sinkhorn import sinkhorn


@dataclass
class BatchedResult:
    """Solution of ``k`` entropic OT problems ``(a, b_k, M)``: potentials ``[n, k]``, ``[m, k]`` in cost units."""

    f: torch.Tensor
    g: torch.Tensor
    costs: torch.Tensor
    marginal_errors: torch.Tensor
    iterations: int
    converged: bool
    history: list[float] = field(repr=False, default_factory=list)
    fallback: bool = False


def check_batched(
    a: Any, b: Any, M: Any, reg: Any, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """:func:`precond.ot._validate.check_problem` with ``b`` of shape ``[m, k]``."""
    return check_problem(a, b, M, reg, dtype, columns=True)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0 / anything = 0`` (zero-mass points keep a zero scaling)."""
    return torch.where(num > 0, num / den, torch.zeros_like(num))


def _log0(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x.log(), torch.full_like(x, -math.inf))


def linear_costs(f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, reg: float) -> torch.Tensor:
    """``⟨P_k, M⟩`` for the plans ``P_k = exp((f_k ⊕ g_k − M)/reg)`` (forbidden pairs contribute 0)."""
    out = []
    for k in range(f.shape[1]):
        plan = torch.exp((f[:, k, None] + g[None, :, k] - M) / reg)
        out.append(torch.where(plan > 0, plan * M, torch.zeros_like(plan)).sum())
    return torch.stack(out)


class _SharedKernel:
    """``K = exp(u₀ ⊕ v₀ − M/reg)`` with base potentials shared by all histograms (``+inf`` → exactly 0)."""

    def __init__(self, M: torch.Tensor, reg: float) -> None:
        self.M, self.reg = M, reg
        self.limit = math.exp(absorb_bound(M.dtype))
        neg = M / -reg
        # Column log-normalizers: every column of K sums to one, so no entry overflows.
        self.u0 = torch.zeros(M.shape[0], dtype=M.dtype, device=M.device)
        lse = torch.logsumexp(neg, dim=0)
        self.v0 = torch.where(torch.isfinite(lse), -lse, torch.zeros_like(lse))
        self.kernel = torch.exp(neg + self.v0[None, :])

    def absorb(self, du: torch.Tensor, dv: torch.Tensor) -> None:
        self.u0, self.v0 = self.u0 + du, self.v0 + dv
        self.kernel = torch.exp(self.u0[:, None] + self.v0[None, :] - self.M / self.reg)


def _in_range(x: torch.Tensor, mask: torch.Tensor, limit: float) -> bool:
    vals = x[mask]
    return vals.numel() == 0 or bool(((vals >= 1.0 / limit) & (vals <= limit)).all())


def _fallback(
    a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, reg: float, tol: float, max_iter: int
) -> BatchedResult:
    """``k`` separate solves of :func:`precond.ot.sinkhorn` (each absorbs on its own)."""
    fs, gs, errs, iters, conv = [], [], [], 0, True
    for k in range(b.shape[1]):
        res = sinkhorn(a, b[:, k], M, reg, tol=tol, max_iter=max_iter, dtype=M.dtype, warn=False)
        fs.append(res.f)
        gs.append(res.g)
        errs.append(res.marginal_error)
        iters = max(iters, res.iterations)
        conv = conv and res.converged
    f, g = torch.stack(fs, 1), torch.stack(gs, 1)
    errors = torch.tensor(errs, dtype=M.dtype, device=M.device)
    return BatchedResult(f, g, linear_costs(f, g, M, reg), errors, iters, conv, fallback=True)


def batched_sinkhorn(
    a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, reg: float, tol: float, max_iter: int
) -> BatchedResult:
    """Solve the ``k`` problems ``(a, b[:, k], M)`` together; stop when every marginal error is ``≤ tol``.

    The error of histogram ``k`` is ``‖P_k 1 − a‖₁ + ‖P_kᵀ 1 − b_k‖₁`` (its column marginal is exact after each
    column update, so the row part is what is measured, as in :func:`precond.ot._scaling.scaling_sweeps`).
    """
    ker = _SharedKernel(M, reg)
    row_mask = (a > 0)[:, None].expand(-1, b.shape[1])
    col_mask = b > 0
    s = (a > 0).to(M.dtype)[:, None].expand(-1, b.shape[1]).clone()
    t = b.clone()  # the exact column update from s = 1: Kᵀ1 = 1 by construction of v₀
    history: list[float] = []
    iterations, converged = 0, False
    while True:
        kt = ker.kernel @ t
        row_err = (s * kt - a[:, None]).abs().sum(0)
        err = float(row_err.max())
        history.append(err)
        if not math.isfinite(err):
            return _fallback(a, b, M, reg, tol, max_iter)
        if err <= tol:
            converged = True
            break
        if iterations >= max_iter:
            break
        s_new = _safe_div(a[:, None].expand_as(kt), kt)
        t_new = _safe_div(b, ker.kernel.T @ s_new)
        iterations += 1
        if not (bool(torch.isfinite(s_new).all()) and bool(torch.isfinite(t_new).all())):
            return _fallback(a, b, M, reg, tol, max_iter)
        s, t = s_new, t_new
        if not (_in_range(s, row_mask, ker.limit) and _in_range(t, col_mask, ker.limit)):
            log_s, log_t = _log0(s), _log0(t)
            du = torch.where(row_mask, log_s, torch.zeros_like(log_s)).sum(1) / row_mask.sum(1).clamp(min=1)
            dv = torch.where(col_mask, log_t, torch.zeros_like(log_t)).sum(1) / col_mask.sum(1).clamp(min=1)
            s, t = torch.exp(log_s - du[:, None]), torch.exp(log_t - dv[:, None])
            if not (_in_range(s, row_mask, ker.limit) and _in_range(t, col_mask, ker.limit)):
                return _fallback(a, b, M, reg, tol, max_iter)  # the histograms need kernels of their own
            ker.absorb(du, dv)
    f = reg * (ker.u0[:, None] + _log0(s))
    g = reg * (ker.v0[:, None] + _log0(t))
    plan_rows = s * (ker.kernel @ t)
    plan_cols = t * (ker.kernel.T @ s)
    errors = (plan_rows - a[:, None]).abs().sum(0) + (plan_cols - b).abs().sum(0)
    weighted = torch.where(ker.kernel > 0, ker.kernel * M, torch.zeros_like(M))
    costs = (s * (weighted @ t)).sum(0)
    return BatchedResult(f, g, costs, errors, iterations, converged, history)
