"""Conda: column-normalized Adam — Adam in the singular basis of the momentum (Wang et al. 2025, arXiv 2509.24218)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from precond.optim._adam import bias_correction
from precond.optim._common import check_adamw_like, check_bool, check_int, check_real, masked, state_dtype
from precond.optim._hybrid import (
    HybridOptimizer,
    MatrixBatch,
    apply_matrix_update_,
    matrix_shape,
    matrix_zeros,
    stack_as,
    write_back_,
    zeroed,
)


def _rotate(x: torch.Tensor, basis: torch.Tensor, right: bool) -> torch.Tensor:
    """Into the rotated coordinates: ``x Pᵀ`` (right, ``P = Vᵀ``) or ``Pᵀ x`` (left, ``P = U``)."""
    return x @ basis.mT if right else basis.mT @ x


def _rotate_back(x: torch.Tensor, basis: torch.Tensor, right: bool) -> torch.Tensor:
    return x @ basis if right else basis @ x


def momentum_basis(exp_avg: torch.Tensor, right: bool, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The short-side singular basis of each momentum matrix ``[B, m, n]``: ``Vᵀ`` (``n × n``, right, ``m >= n``)
    or ``U`` (``m × m``, left) of ``svd(m_t, full_matrices=False)`` (Conda's ``proj_type='std'``).  A member whose
    SVD fails or comes out non-finite keeps ``previous``; returns ``(basis, failed)``."""
    try:
        u, _, vh = torch.linalg.svd(exp_avg, full_matrices=False)
        new = vh if right else u
    except RuntimeError:  # LAPACK did not converge: keep every previous basis
        return previous.clone(), torch.ones(previous.shape[0], dtype=torch.bool, device=previous.device)
    good = torch.isfinite(new).flatten(1).all(1)
    return torch.where(good[:, None, None], new, previous), ~good


def conda_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    bases: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    scale: float,
    refresh: bool,
    rotate_moment: bool = False,
    keep: torch.Tensor | None = None,
) -> torch.Tensor | None:
    r"""One Conda step on same-shaped matrices (matrix view ``[shape[0], prod(rest)]``), in place.

    The official update (jie040109/Conda ``conda_torch``), with ``P`` the short-side singular basis of the
    momentum (:func:`momentum_basis`), recomputed when ``refresh``::

        m ← β1·m + (1 − β1)·g                          (original coordinates, torch's ``lerp_``)
        g' = g Pᵀ,  m' = m Pᵀ                           (right, rows >= cols; left: Pᵀ g, Pᵀ m)
        v ← β2·v + (1 − β2)·g'²                         (rotated coordinates, elementwise)
        p ← p·(1 − lr·λ) − scale·lr/(1 − β1ᵗ) · (m' / (sqrt(v)/sqrt(1 − β2ᵗ) + eps)) P

    The Adam arithmetic is ``torch.optim.AdamW``'s (decay before the update, ``eps`` added to the bias-corrected
    ``sqrt(v)``, the step folded into the numerator as its ``addcdiv_`` does), so with ``P = I`` and
    ``scale = 1`` the step is bitwise AdamW.  The authors instead add ``eps`` to the raw ``sqrt(v)``, scale the
    step by ``sqrt(1 − β2ᵗ)`` and decay after the update: a difference of ``O(eps)`` relative and ``O(lr²λ)``.

    ``rotate_moment`` (ours, off by default as in the paper): on a refresh that replaces an existing basis,
    carry ``v`` into the new coordinates as SOAP does, ``v ← v (R∘R)`` with ``R = P_old P_newᵀ`` (left:
    ``(R∘R)ᵀ v``, ``R = P_oldᵀ P_new``), exact for a diagonal covariance in the old basis; the authors keep ``v``
    as it is.  ``steps`` are float32 0-d counters; ``bases`` ``[n, n]`` (right) or ``[m, m]`` (left).  ``keep``
    (0-d bool) makes the call a bitwise no-op when false; it must be ``None`` on ``refresh`` steps (the SVD is
    not masked).  Returns the per-member count of failed SVDs on refresh steps (else ``None``).
    """
    rows, cols = matrix_shape(params[0])
    right = rows >= cols
    beta1, beta2 = betas
    sdt = state_dtype(params[0])
    g = zeroed(stack_as(grads, rows, cols, sdt), keep)
    m = stack_as(exp_avgs, rows, cols, sdt)
    m.lerp_(g, masked(1.0 - beta1, keep, 0.0, sdt))
    write_back_(exp_avgs, m)
    basis = torch.stack(bases)
    v = stack_as(exp_avg_sqs, rows, cols, sdt)
    failed = None
    if refresh:
        new, failed = momentum_basis(m, right, basis)
        if rotate_moment:
            overlap = basis @ new.mT if right else basis.mT @ new
            v = v @ overlap.square() if right else overlap.square().mT @ v
        basis = new
        write_back_(bases, basis)
    g_rot = _rotate(g, basis, right)
    m_rot = _rotate(m, basis, right)
    v.mul_(masked(beta2, keep, 1.0, sdt)).addcmul_(g_rot, g_rot, value=1.0 - beta2)
    write_back_(exp_avg_sqs, v)
    torch._foreach_add_(steps, 1.0 if keep is None else keep.to(steps[0].dtype))
    t = torch.stack(steps).to(torch.float64)
    step_size_neg = masked((-lr * scale / bias_correction(beta1, t)).to(sdt), keep, 0.0)
    bc2_sqrt = bias_correction(beta2, t).sqrt().to(sdt)
    denom = (v.sqrt() / bc2_sqrt.view(-1, 1, 1)).add_(eps)
    delta = _rotate_back((m_rot * step_size_neg.view(-1, 1, 1)) / denom, basis, right)
    apply_matrix_update_(params, delta, decay=1.0 - lr * weight_decay, keep=keep)
    return failed


class Conda(HybridOptimizer):
    r"""Conda (Wang et al. 2025, "Conda: Column-Normalized Adam for Training Large Language Models Faster",
    arXiv 2509.24218): Adam whose second moment lives in the singular basis of the momentum.

    For a matrix ``W ∈ R^{m×n}`` the first moment stays in the original coordinates; every
    ``update_proj_gap`` steps (the first step included) ``P`` becomes the short-side singular basis of the
    momentum (``Vᵀ`` for ``m >= n``, ``U`` otherwise; full rank — a rotation, not a low-rank projection), the
    gradient and momentum are rotated by it, Adam's elementwise second moment is kept in the rotated basis and
    the normalized step is rotated back and multiplied by ``scale`` (:func:`conda_step_`).  With ``m ≥ n`` and
    ``m_t = UΣVᵀ`` Muon would divide each column of ``m_t V = UΣ`` by its norm ``σ_i``; Conda divides it
    entrywise by Adam's ``sqrt(v)`` instead — hence "column-normalized".  It is a one-sided SOAP whose basis
    comes from the momentum and is refreshed rarely (2000 steps against SOAP's 10).

    **Which parameters are projected.**  As in the authors' training scripts (GaLore's convention), the
    projected matrices and the rest share one optimizer and one ``lr``: the rest (biases, gains, embeddings,
    heads) run AdamW with the same ``lr``, ``betas``, ``eps`` and ``weight_decay`` and no ``scale`` (for float32
    parameters bitwise ``torch.optim.AdamW``).  Routing follows :class:`precond.optim.Muon`: pass ``(name,
    tensor)`` pairs or an ``nn.Module`` and a matrix is projected unless its name looks like an embedding or
    head; a group's ``matrix`` key (``True``/``False``) overrides.  The authors project exactly the
    ``nn.Linear`` weights whose name contains ``attn`` or ``mlp``; ``pytorch_optimizer.Conda`` projects every
    2-D parameter given to it.

    Args:
        params: tensors, ``(name, tensor)`` pairs, param groups or an ``nn.Module``.
        lr: learning rate (default ``1e-3``, the class default of the official code; its LLaMA scripts use
            ``1e-2`` with ``scale=0.25``).
        betas: ``(β1, β2)`` (default ``(0.9, 0.999)``; the scripts use ``(0.9, 0.99)``).
        eps: added to the bias-corrected ``sqrt(v)`` (default ``1e-8``).
        weight_decay: decoupled, ``p ← p·(1 − lr·λ)`` (default ``0``).
        update_proj_gap: steps between basis refreshes (default ``2000``; the SVD runs on steps 1,
            ``T + 1``, ``2T + 1``, … as in the official code, whose step index starts at 0 —
            ``pytorch_optimizer.Conda`` refreshes on steps 1, ``T``, ``2T``, …).
        scale: factor on the projected matrices' step (default ``1``; the paper's runs use ``0.25``).
        rotate_moment: carry the second moment into a new basis at each refresh (ours; default ``False``, the
            authors' choice of keeping the stale ``v``); see :func:`conda_step_`.
        nonfinite: ``"skip"`` (default): a step with a non-finite gradient is a no-op on params and state
            (masked, without a host sync, except on refresh steps, whose SVD reads the flag on the host), counted
            in ``state[p]["nonfinite_skips"]``; ``"off"`` skips the check (torch.optim's behaviour, e.g. behind a
            ``GradScaler``, which skips such steps itself); ``"raise"``: ``ValueError`` before anything changes.

    State of a projected matrix: ``exp_avg`` (param shape), ``exp_avg_sq`` (matrix view, rotated), ``basis``
    (``[n, n]`` or ``[m, m]``), ``step`` (float32), ``calls`` (``int``), ``basis_fallbacks`` (failed SVDs, which
    keep the previous basis), ``nonfinite_skips``; floating state is float32 for bf16/fp16 parameters (the SVD
    runs in float32).  This is more memory than Adam (the basis on top of two moments).
    """

    optimizer_name = "Conda"
    refresh_key = "update_proj_gap"
    refresh_syncs = True
    fallback_key = "basis_fallbacks"
    shares_adam_settings = True

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update_proj_gap: int = 2000,
        scale: float = 1.0,
        rotate_moment: bool = False,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            update_proj_gap=update_proj_gap,
            scale=scale,
            rotate_moment=rotate_moment,
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_matrix_group(self, group: dict[str, Any], where: str) -> None:
        check_adamw_like(group, where)
        check_int(group, "update_proj_gap", where, low=1)
        check_real(group, "scale", where, low=0.0)
        check_bool(group, "rotate_moment", where)

    def _init_matrix_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        rows, cols = matrix_shape(p)
        sdt = state_dtype(p)
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros(p.shape, dtype=sdt, device=p.device)
        state["exp_avg_sq"] = matrix_zeros(p)
        state["basis"] = torch.eye(min(rows, cols), dtype=sdt, device=p.device)

    def _step_batch(self, group: dict[str, Any], batch: MatrixBatch, keep: torch.Tensor | None) -> torch.Tensor | None:
        return conda_step_(
            batch.params,
            batch.grads(),
            *batch.lists("exp_avg", "exp_avg_sq", "basis", "step"),
            lr=group["lr"],
            betas=tuple(group["betas"]),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            scale=group["scale"],
            refresh=batch.refresh,
            rotate_moment=group["rotate_moment"],  # v is zero before the first basis: harmless
            keep=keep,
        )
