"""Gradients of the entropic-OT values with respect to ``a``, ``b`` and ``M``, at the optimal potentials.

Both values are functions of the optimum ``P = exp((f ⊕ g − M)/ε)`` (ε = ``reg``) only, so no iteration is
differentiated (no unrolling, O(1) memory in the number of iterations):

* ``"entropic"``: ``W_ε = ⟨P, M⟩ + ε Σ P log P``.  Envelope theorem (Danskin; Peyré & Cuturi 2019,
  "Computational Optimal Transport", Prop. 9.2): ``∂W_ε/∂M = P``, ``∂W_ε/∂a = f + ε/2``,
  ``∂W_ε/∂b = g + ε/2`` (the Lagrange multipliers of ``P1 = a``, ``Pᵀ1 = b``; ``ε/2`` each because POT's
  potentials absorb the ``+1`` of ``d(x log x)/dx``).
* ``"linear"``: ``L = ⟨P, M⟩`` (POT's ``sinkhorn2`` value).  ``P`` moves with the inputs, so the envelope
  theorem does not apply; implicit differentiation of the optimality conditions ``P1 = a``, ``Pᵀ1 = b``
  gives, with ``H = [[diag(P1), P], [Pᵀ, diag(Pᵀ1)]]`` (the dual Hessian times ε) and
  ``H z = ((P∘M)1, (P∘M)ᵀ1)/ε`` (one symmetric solve, through its Schur complement on the smaller side):
  ``∂L/∂M = P ∘ (1 − M/ε + z_f ⊕ z_g)``, ``∂L/∂a = ε z_f``, ``∂L/∂b = ε z_g``.

Gauge: the problem needs ``Σa = Σb``, so a gradient in ``(a, b)`` is only defined up to ``(c·1, −c·1)``;
every representative gives the exact directional derivative along perturbations with ``Σ da = Σ db``.  We
return the one with ``mean(∂/∂a) = mean(∂/∂b)``.  POT's ``ot.solve(..., grad="envelope")`` centres each to mean
zero, which agrees with ours along mass-preserving perturbations (``Σ da = Σ db = 0``), the usual case
(histograms on the simplex, e.g. from a softmax).

Zero weights: for ``"linear"`` the one-sided derivative is finite and returned (a new point ``i`` enters with
the row ``q_i = softmax_j((g_j − M_ij)/ε)`` and takes its mass from the columns); for ``"entropic"`` it is
``−inf`` (the slope of ``x log x`` at 0) and returned as such.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def plan_of(f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, reg: float) -> torch.Tensor:
    """``exp((f ⊕ g − M)/reg)``; ``−inf`` potentials (zero mass) and ``+inf`` costs give exact zeros."""
    return torch.exp((f[:, None] + g[None, :] - M) / reg)


def _masked(plan: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``plan ∘ x`` with ``0`` wherever ``plan`` is 0 (so ``0·inf`` from forbidden pairs gives 0, not NaN)."""
    return torch.where(plan > 0, plan * x, torch.zeros_like(plan))


def entropic_value(plan: torch.Tensor, M: torch.Tensor, reg: float) -> torch.Tensor:
    """``⟨P, M⟩ + reg Σ P log P`` with ``0 log 0 = 0``."""
    return _masked(plan, M).sum() + reg * _masked(plan, torch.log(plan)).sum()


def _schur_solve(plan: torch.Tensor, rhs_f: torch.Tensor, rhs_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``[[diag(r), P], [Pᵀ, diag(c)]] (z_f, z_g) = (rhs_f, rhs_g)`` (``r = P1 > 0``, ``c = Pᵀ1 > 0``).

    Eliminates ``z_f = (rhs_f − P z_g)/r``; the Schur complement ``S = diag(c) − Pᵀ diag(1/r) P`` is PSD with
    ``S 1 = 0`` and ``1ᵀ rhs = 0``, so ``(S + λ11ᵀ) z_g = rhs`` has the solution with ``1ᵀ z_g = 0``.
    Singular beyond that (a plan whose support splits into blocks, from ``+inf`` costs): least squares.
    """
    r, c = plan.sum(1), plan.sum(0)
    scaled = plan / r[:, None]
    schur = torch.diag(c) - plan.T @ scaled
    rhs = rhs_g - scaled.T @ rhs_f
    lam = float(c.sum()) / c.numel() ** 2
    system = schur + lam
    z_g = torch.linalg.solve(system, rhs[:, None])[:, 0]
    residual = float((system @ z_g - rhs).abs().max())
    if not math.isfinite(residual) or residual > 1e-6 * max(float(rhs.abs().max()), 1e-300):
        z_g = (torch.linalg.pinv(system, hermitian=True) @ rhs[:, None])[:, 0]
    z_f = (rhs_f - plan @ z_g) / r
    return z_f, z_g


def linear_grads(
    f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, reg: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(∂L/∂a, ∂L/∂b, ∂L/∂M)`` of ``L = ⟨P, M⟩`` at the optimal potentials (module docstring)."""
    rows, cols = torch.isfinite(f), torch.isfinite(g)
    rows_i, cols_j = torch.nonzero(rows).flatten(), torch.nonzero(cols).flatten()
    m_s = M[rows_i][:, cols_j]
    plan = plan_of(f[rows_i], g[cols_j], m_s, reg)
    pm = _masked(plan, m_s)
    alpha, beta = pm.sum(1) / reg, pm.sum(0) / reg
    if plan.shape[0] >= plan.shape[1]:
        z_f, z_g = _schur_solve(plan, alpha, beta)
    else:
        z_g, z_f = _schur_solve(plan.T, beta, alpha)
    grad_m = torch.zeros_like(M)
    grad_m[rows_i[:, None], cols_j[None, :]] = _masked(plan, 1.0 - m_s / reg + z_f[:, None] + z_g[None, :])
    grad_a = torch.zeros_like(f)
    grad_b = torch.zeros_like(g)
    grad_a[rows_i], grad_b[cols_j] = reg * z_f, reg * z_g
    if not bool(rows.all()):  # a point entering with mass δ: row δ·q_i, whose mass leaves the columns
        q = torch.softmax((g[cols_j][None, :] - M[~rows][:, cols_j]) / reg, dim=1)
        grad_a[~rows] = _masked(q, M[~rows][:, cols_j]).sum(1) - q @ grad_b[cols_j]
    if not bool(cols.all()):
        q = torch.softmax((f[rows_i][:, None] - M[rows_i][:, ~cols]) / reg, dim=0)
        grad_b[~cols] = _masked(q, M[rows_i][:, ~cols]).sum(0) - q.T @ grad_a[rows_i]
    return (*_gauge(grad_a, grad_b), grad_m)


def entropic_grads(
    f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, reg: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(∂W_ε/∂a, ∂W_ε/∂b, ∂W_ε/∂M) = (f + ε/2, g + ε/2, P)`` (envelope theorem, module docstring)."""
    grad_a, grad_b = _gauge(f + reg / 2, g + reg / 2)
    return grad_a, grad_b, plan_of(f, g, M, reg)


def _gauge(grad_a: torch.Tensor, grad_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The representative ``(grad_a + c, grad_b − c)`` with equal means over the finite entries."""
    fa, fb = grad_a[torch.isfinite(grad_a)], grad_b[torch.isfinite(grad_b)]
    c = (float(fb.mean()) - float(fa.mean())) / 2 if fa.numel() and fb.numel() else 0.0
    return grad_a + c, grad_b - c


class SinkhornValue(torch.autograd.Function):
    """Value(s) of ``k`` solved problems ``(a, b[:, k], M)`` with the gradients of :mod:`precond.ot._autograd`.

    ``forward(a, b, M, f, g, reg, objective, value)``: ``a``/``b``/``M`` are the user's tensors (or ``None``),
    ``f`` ``[n, k]``, ``g`` ``[m, k]`` the solver's potentials, ``value`` the already computed values ``[k]``.
    The gradients are formed lazily in ``backward`` (one ``[n, m]`` plan and, for ``"linear"``, one dense
    ``min(n, m)``-sized solve per histogram).
    """

    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor | None,
        b: torch.Tensor | None,
        M: torch.Tensor,
        f: torch.Tensor,
        g: torch.Tensor,
        reg: float,
        objective: str,
        value: torch.Tensor,
    ) -> torch.Tensor:
        ctx.reg, ctx.objective = reg, objective
        ctx.meta = [None if x is None else (x.shape, x.dtype, x.device) for x in (a, b)]
        ctx.save_for_backward(f, g, M.detach())
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        f, g, M_user = ctx.saved_tensors
        meta_a, meta_b = ctx.meta
        reg = ctx.reg
        M = M_user.to(f.dtype)
        grads = linear_grads if ctx.objective == "linear" else entropic_grads
        weights = grad_out.reshape(-1).to(f.dtype)
        grad_a = torch.zeros_like(f[:, 0])
        grad_b = torch.zeros_like(g)
        grad_m = torch.zeros_like(M)
        for k in range(f.shape[1]):
            ga, gb, gm = grads(f[:, k], g[:, k], M, reg)
            w = weights[k]
            grad_a += w * ga
            grad_b[:, k] = w * gb
            grad_m += w * gm
        needs = ctx.needs_input_grad
        out_a = _like(grad_a, meta_a) if needs[0] else None
        out_b = _like(grad_b, meta_b) if needs[1] else None
        out_m = grad_m.to(M_user) if needs[2] else None
        return out_a, out_b, out_m, None, None, None, None, None


def _like(grad: torch.Tensor, meta: Any) -> torch.Tensor | None:
    """``grad`` in the shape, dtype and device of the input it belongs to (``None`` for a uniform default)."""
    if meta is None:
        return None
    shape, dtype, device = meta
    return grad.to(dtype=dtype, device=device).reshape(shape)
