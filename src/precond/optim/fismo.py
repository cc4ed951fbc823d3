"""FISMO: Muon inside Kronecker-factored Fisher whitening (Xu, Yan, Zhang 2026, arXiv 2601.21750).

No code by the authors was found; the algorithm is Algorithm 1 as transcribed by two independent secondary
sources that agree (see ``/work/shared/research/seed_algorithms.md`` §2), and its defaults are guesses by analogy
with Muon and Shampoo (the paper's were not retrievable).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from precond.linalg import MUON_COEFFICIENTS, inverse_root, newton_schulz
from precond.optim._common import (
    check_choice,
    check_int,
    check_momentum_like,
    check_ns,
    check_real,
    masked,
    state_dtype,
)
from precond.optim._hybrid import (
    HybridOptimizer,
    MatrixBatch,
    adam_hyperparameters,
    apply_matrix_update_,
    matrix_shape,
    matrix_zeros,
    stack_as,
    write_back_,
    zeroed,
)
from precond.optim.muon import SCALES, update_scale


def _trace(x: torch.Tensor) -> torch.Tensor:
    return x.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]


def _factor_update(factor: torch.Tensor, stat: torch.Tensor, gamma: float, damping: float) -> torch.Tensor:
    """``sym(d · F̃ / tr F̃)`` with ``F̃ = γ F + (1 − γ)(stat + μ (tr F / d) I)`` (trace-normalised: ``tr = d``)."""
    d = factor.shape[-1]
    eye = torch.eye(d, dtype=factor.dtype, device=factor.device)
    target = stat + eye * (damping * _trace(factor) / d)
    blend = factor.mul(gamma).add_(target, alpha=1.0 - gamma)
    blend = blend * (d / _trace(blend))
    return 0.5 * (blend + blend.mT)


def fismo_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    left: list[torch.Tensor],
    right: list[torch.Tensor],
    left_roots: list[torch.Tensor],
    right_roots: list[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    gamma: float,
    damping: float,
    root_eps: float,
    refresh: bool,
    ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
    scale: str = "none",
    keep: torch.Tensor | None = None,
) -> torch.Tensor | None:
    r"""One FISMO step on same-shaped matrices ``G ∈ R^{m×n}``, in place (Algorithm 1)::

        L = (1/n) G Q⁻¹ Gᵀ + μ (tr P / m) I;   P ← sym(m P̃ / tr P̃),  P̃ = γ P + (1 − γ) L
        R = (1/m) Gᵀ P⁻¹ G + μ (tr Q / n) I;   Q ← sym(n Q̃ / tr Q̃),  Q̃ = γ Q + (1 − γ) R   (the new P: Gauss–Seidel)
        G̃ = P^{-1/2} G Q^{-1/2};   M ← β M + (1 − β) G̃          (momentum in the whitened space)
        p ← p·(1 − lr·λ) − lr·scale·P^{-1/2} NS(M) Q^{-1/2}      (nesterov: NS(G̃ + β (M − G̃)))

    The inverse roots ``P^{-1/2}``, ``Q^{-1/2}`` (:func:`precond.linalg.inverse_root`, relative damping
    ``root_eps``) are recomputed only when ``refresh`` (every step is Algorithm 1; the class amortises them as
    Shampoo does); the inverses are their squares.  With ``γ = 1`` the factors stay ``I`` and the step is
    Muon's (non-Nesterov EMA momentum).  ``keep`` masks non-refresh steps (must be ``None`` on refresh steps,
    whose ``eigh`` is not masked).  Returns the per-member count of failed roots on refresh steps.
    """
    rows, cols = matrix_shape(params[0])
    sdt = state_dtype(params[0])
    g = zeroed(stack_as(grads, rows, cols, sdt), keep)
    p_fac, q_fac = torch.stack(left), torch.stack(right)
    p_root, q_root = torch.stack(left_roots), torch.stack(right_roots)
    q_inv = q_root @ q_root
    new_p = _factor_update(p_fac, g @ q_inv @ g.mT / cols, gamma, damping)
    failed = None
    if refresh:
        p_root, failed_p = inverse_root(new_p, 0.5, root_eps, p_root)
    p_inv = p_root @ p_root
    new_q = _factor_update(q_fac, g.mT @ p_inv @ g / rows, gamma, damping)
    if refresh:
        q_root, failed_q = inverse_root(new_q, 0.5, root_eps, q_root)
        failed = failed_p.to(torch.int64) + failed_q.to(torch.int64)
        write_back_(left_roots, p_root)
        write_back_(right_roots, q_root)
    if keep is not None:
        new_p, new_q = torch.where(keep, new_p, p_fac), torch.where(keep, new_q, q_fac)
    write_back_(left, new_p)
    write_back_(right, new_q)
    white = p_root @ g @ q_root
    buf = stack_as(momentum_buffers, rows, cols, sdt)
    buf.lerp_(white, masked(1.0 - momentum, keep, 0.0, sdt))
    write_back_(momentum_buffers, buf)
    u = white.lerp_(buf, momentum) if nesterov else buf
    delta = p_root @ newton_schulz(u, ns_steps, ns_coefficients, eps) @ q_root
    delta.mul_(masked(-lr * update_scale(rows, cols, scale), keep, 0.0, sdt))
    apply_matrix_update_(params, delta, decay=1.0 - lr * weight_decay, keep=keep)
    return failed


class FISMO(HybridOptimizer):
    r"""FISMO (Xu, Yan, Zhang 2026, "Fisher-Structured Momentum-Orthogonalized optimizer", arXiv 2601.21750):
    Muon's orthogonalized momentum taken in the coordinates whitened by a Kronecker-factored Fisher ``F ≈ Q ⊗ P``,
    i.e. steepest descent in the trust region ``‖P^{1/2} ΔW Q^{1/2}‖₂ ≤ η``: ``ΔW = P^{-1/2} Polar(M) Q^{-1/2}``.

    **Sources.**  The authors published no code; :func:`fismo_step_` follows Algorithm 1 as transcribed by two
    secondary sources (they agree).  The paper's hyperparameters were not retrievable: the defaults below are
    guesses by analogy (Muon's momentum and Newton–Schulz, Shampoo/K-FAC-like factor EMA and damping, roots
    every 10 steps as Shampoo's).  Treat them as such.

    Args:
        params: tensors, ``(name, tensor)`` pairs, param groups or an ``nn.Module`` (routing as
            :class:`precond.optim.Muon`; a group's ``matrix`` key overrides).
        lr: matrix learning rate (default ``0.02``, Muon's).
        momentum: ``β`` of the whitened momentum (default ``0.95``).
        nesterov: Nesterov momentum (default ``False``, Algorithm 1's plain EMA).
        weight_decay: decoupled (default ``0``).
        gamma: EMA factor ``γ`` of the Fisher factors (default ``0.95``); ``1`` freezes them at ``I`` (Muon).
        damping: ``μ``, the trace-relative damping of the factor statistics (default ``1e-3``).
        precondition_frequency: steps between inverse-root recomputations (default ``10``; ``1`` is Algorithm 1).
        root_eps: extra damping of the roots, relative to the largest eigenvalue (default ``1e-8``).
        ns_steps, ns_coefficients, eps: Newton–Schulz, as :class:`precond.optim.Muon`.
        scale: ``"none"`` (default), ``"shape"`` or ``"match_adamw"`` as :class:`precond.optim.Muon`.
        adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay: the AdamW part (defaults ``0.2``, ``(0.9, 0.95)``,
            ``1e-8``, ``0``).
        nonfinite: as :class:`precond.optim.Conda` (root steps read the flag on the host).

    Cost: Shampoo's (two ``eigh`` per matrix per refresh, plus ``O(m²n + mn²)`` products every step).  State of
    a matrix: ``momentum_buffer``, ``left``/``right`` (``P``, ``Q``), ``left_root``/``right_root``,
    ``root_fallbacks``, ``calls``, ``nonfinite_skips``.
    """

    optimizer_name = "FISMO"
    refresh_key = "precondition_frequency"
    refresh_syncs = True
    fallback_key = "root_fallbacks"

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        gamma: float = 0.95,
        damping: float = 1e-3,
        precondition_frequency: int = 10,
        root_eps: float = 1e-8,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
        eps: float = 1e-7,
        scale: str = "none",
        adam_lr_ratio: float = 0.2,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
        adam_weight_decay: float = 0.0,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            gamma=gamma,
            damping=damping,
            precondition_frequency=precondition_frequency,
            root_eps=root_eps,
            ns_steps=ns_steps,
            ns_coefficients=ns_coefficients,
            eps=eps,
            scale=scale,
            **adam_hyperparameters(adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay),
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_matrix_group(self, group: dict[str, Any], where: str) -> None:
        check_momentum_like(group, where, nesterov=True)
        check_real(group, "gamma", where, low=0.0, high=1.0)
        check_real(group, "damping", where, low=0.0, low_open=True)
        check_int(group, "precondition_frequency", where, low=1)
        check_real(group, "root_eps", where, low=0.0)
        check_ns(group, where)
        check_choice(group, "scale", where, SCALES)

    def _init_matrix_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        rows, cols = matrix_shape(p)
        sdt = state_dtype(p)
        state["momentum_buffer"] = matrix_zeros(p)
        for name, d in (("left", rows), ("right", cols)):
            state[name] = torch.eye(d, dtype=sdt, device=p.device)
            state[f"{name}_root"] = torch.eye(d, dtype=sdt, device=p.device)

    def _step_batch(self, group: dict[str, Any], batch: MatrixBatch, keep: torch.Tensor | None) -> torch.Tensor | None:
        return fismo_step_(
            batch.params,
            batch.grads(),
            *batch.lists("momentum_buffer", "left", "right", "left_root", "right_root"),
            lr=group["lr"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            gamma=group["gamma"],
            damping=group["damping"],
            root_eps=group["root_eps"],
            refresh=batch.refresh,
            ns_steps=group["ns_steps"],
            ns_coefficients=tuple(group["ns_coefficients"]),
            eps=group["eps"],
            scale=group["scale"],
            keep=keep,
        )
