"""A batched PCG over many independent small SPD systems, each with its own tolerance.

The systems are ``H_i x_i = b_i``, ``i = 1 … n_seg``, each of size ``d``, given only through a batched matvec
``x ↦ (H_i x_i)_i`` and optionally a batched preconditioner, e.g. the ridge normal operators
``W_iᵀW_i + λ_i I`` of padded designs (:mod:`precond.linalg._ragged`) and their sketch factors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def segment_pcg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float | torch.Tensor,
    max_iter: int,
    x0: torch.Tensor | None = None,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
    r0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preconditioned CG on ``n_seg`` independent SPD systems ``H_i x_i = b_i`` at once (Hestenes–Stiefel 1952).

    Each system stops on its own relative residual ``‖b_i − H_i x_i‖₂ ≤ tol_i ‖b_i‖₂`` (masked: a converged
    system no longer moves while the others go on), or after ``max_iter`` iterations.  Each iteration costs one
    batched ``matvec`` and one ``precond`` for all systems.  CG never increases the quadratic ``½xᵀHx − bᵀx`` of
    a system relative to its start ``x0``, so a warm start can only help.

    Args:
        matvec: ``[n_seg, d] → [n_seg, d]``, ``x ↦ (H_i x_i)_i``.
        b: ``[n_seg, d]`` right-hand sides.
        tol: relative tolerance, a float or ``[n_seg]`` per system (``0`` runs ``max_iter`` iterations).
        max_iter: iteration cap ``≥ 0``.
        x0: warm start ``[n_seg, d]`` (default zero).
        precond: ``r ↦ P⁻¹ r`` batched like ``matvec`` (default: none).
        r0: the initial residual ``b − H x0`` when the caller already has it (saves one ``matvec``; with ``x0``).

    Returns:
        ``(x, iterations, converged)``: the solutions, the iterations each system ran ``[n_seg]`` (int64) and
        whether it met its tolerance ``[n_seg]`` (bool).  A breakdown ``pᵢᵀ H_i pᵢ ≤ 0`` freezes that system
        (reported as not converged unless its residual is already within tolerance).
    """
    if max_iter < 0:
        raise ValueError(f"`max_iter` must be ≥ 0, got {max_iter}")
    tol_t = torch.as_tensor(tol, dtype=b.dtype, device=b.device)
    if bool((tol_t < 0).any()) or not bool(torch.isfinite(tol_t).all()):
        raise ValueError(f"`tol` must be finite and ≥ 0, got {tol}")

    def apply_p(r: torch.Tensor) -> torch.Tensor:
        return r if precond is None else precond(r)

    # in place throughout: each iteration's vector updates are a few ``[n_seg, d]`` passes, no new tensors
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    if r0 is not None and x0 is None:
        raise ValueError("`r0` is the residual of a warm start: pass `x0` too")
    r = (b - matvec(x) if r0 is None else r0.clone()) if x0 is not None else b.clone()
    threshold = (tol_t * torch.linalg.vector_norm(b, dim=1)).reshape(-1)
    threshold = threshold.expand(b.shape[0])
    iterations = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    rnorm = torch.linalg.vector_norm(r, dim=1)
    active = rnorm > threshold
    z = apply_p(r)
    p = z.clone()
    rz = torch.linalg.vecdot(r, z)
    one = torch.ones_like(rz)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        hp = matvec(p)
        php = torch.linalg.vecdot(p, hp)
        ok = active & (php > 0)
        alpha = torch.where(ok, rz / torch.where(ok, php, one), 0.0)[:, None]
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, hp, value=-1.0)
        iterations += ok
        rnorm = torch.linalg.vector_norm(r, dim=1)
        active = ok & (rnorm > threshold)
        z = apply_p(r)  # ``r`` itself without a preconditioner: ``p`` below must stay its own tensor
        rz_new = torch.linalg.vecdot(r, z)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, one), 0.0)
        p.mul_(beta[:, None]).add_(z)
        rz = rz_new
    return x, iterations, rnorm <= threshold
