"""Preconditioned conjugate gradient for symmetric positive (semi)definite operators, batched on a leading axis."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CGInfo:
    """Outcome of :func:`pcg`.

    Attributes:
        iterations: CG iterations run (matvecs after the initial residual).
        residual_norm: largest final ``‖b − A x‖₂`` over the batch (the recursively updated residual).
        converged: every system reached ``‖r‖₂ ≤ max(tol·‖b‖₂, atol)``.
    """

    iterations: int
    residual_norm: float
    converged: bool


def pcg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    precond: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    x0: torch.Tensor | None = None,
    atol: float = 0.0,
) -> tuple[torch.Tensor, CGInfo]:
    r"""Solve ``A x = b`` for symmetric positive definite ``A`` given only ``x ↦ A x``.

    Hestenes–Stiefel CG with a left preconditioner ``z = P⁻¹ r``.  ``b`` is ``[n]`` or a batch ``[..., n]`` of
    independent systems sharing ``matvec`` (which must map ``[..., n]`` to ``[..., n]``); step lengths are per
    system and a system that has converged stops moving (its step is masked to zero) while the others go on.

    A positive *semi*\ definite ``A`` is fine when ``b`` lies in its range: started from zero, the iterates stay
    in the range in exact arithmetic (this is how the entropic-OT Newton system with its ``(1, −1)`` null vector
    is usually solved).

    Args:
        matvec: ``x ↦ A x``, batched over leading dimensions.
        b: right-hand side ``[..., n]``.
        precond: ``r ↦ P⁻¹ r`` (a callable), or a tensor broadcastable to ``b`` holding the *inverse* diagonal
            (Jacobi: ``1 / diag(A)``), or ``None`` for plain CG.
        tol: relative tolerance, stop when ``‖r‖₂ ≤ tol·‖b‖₂`` for every system.
        max_iter: iteration cap; default ``2·n`` (CG is exact after ``n`` steps in exact arithmetic).
        x0: starting point (default zero).
        atol: absolute floor on the residual norm.

    Returns:
        ``(x, info)`` with ``x`` shaped like ``b`` and a :class:`CGInfo`.
    """
    if tol < 0 or atol < 0:
        raise ValueError(f"tol and atol must be nonnegative, got tol={tol}, atol={atol}")
    n = b.shape[-1]
    if max_iter is None:
        max_iter = 2 * n
    if callable(precond):
        apply_p = precond
    elif precond is None:

        def apply_p(r: torch.Tensor) -> torch.Tensor:
            return r

    else:
        inv_diag = precond

        def apply_p(r: torch.Tensor) -> torch.Tensor:
            return r * inv_diag

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    threshold = torch.clamp(tol * torch.linalg.vector_norm(b, dim=-1, keepdim=True), min=atol)
    rnorm = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
    active = rnorm > threshold
    z = apply_p(r)
    p = z.clone()
    rz = (r * z).sum(-1, keepdim=True)
    it = 0
    while it < max_iter and bool(active.any()):
        ap = matvec(p)
        pap = (p * ap).sum(-1, keepdim=True)
        # A breakdown (pᵀAp ≤ 0: a null direction, or the operator is not PSD) freezes that system.
        ok = active & (pap > 0)
        alpha = torch.where(ok, rz / torch.where(ok, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        it += 1
        rnorm = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
        active = ok & (rnorm > threshold)
        if not bool(active.any()):
            break
        z = apply_p(r)
        rz_new = (r * z).sum(-1, keepdim=True)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    converged = bool((rnorm <= threshold).all())
    return x, CGInfo(iterations=it, residual_norm=float(rnorm.max()), converged=converged)
