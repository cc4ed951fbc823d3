"""AuON (Maity 2025, arXiv 2509.24320): Frobenius-normalized Nesterov momentum with a "cosh" rescaling that is
numerically a no-op — a cheap normalized-momentum baseline, not an orthogonalizer."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from precond.optim._common import check_choice, check_momentum_like, check_real, masked, state_dtype
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

AUON_SCALES = ("shape", "match_adamw", "none")


def auon_scale(rows: int, cols: int, scale: str) -> float:
    """Factor on the unit-Frobenius update of a ``rows × cols`` matrix: ``"shape"`` ``sqrt(max(1, rows/cols))``
    (the paper's, Muon's aspect factor), ``"match_adamw"`` ``0.2·sqrt(rows·cols)`` (entries of RMS ``0.2``, the
    RMS of AdamW's update, so AdamW's lr fits), ``"none"`` ``1``."""
    if scale == "shape":
        return math.sqrt(max(1.0, rows / cols))
    if scale == "match_adamw":
        return 0.2 * math.sqrt(rows * cols)
    if scale == "none":
        return 1.0
    raise ValueError(f"AuON: invalid scale={scale!r}: must be one of {', '.join(map(repr, AUON_SCALES))}")


def cosh_rms(x: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    r"""``r = sqrt(mean_ij cosh(γ X_ij)²)`` per matrix of ``[B, m, n]`` (AuON's "tail-aware" RMS).

    For a unit-Frobenius ``X`` (``Σ X² = 1`` over ``N = mn`` entries) ``cosh² u ≤ 1 + u² cosh²γ`` on
    ``|u| ≤ γ`` gives ``1 ≤ r² ≤ 1 + γ² cosh²(γ)/N``: ``r − 1 = O(1/N)`` whatever the matrix, so dividing by
    ``r`` changes nothing measurable (``tests/optim/test_auon.py`` asserts the bound).
    """
    return torch.cosh(gamma * x).square().mean(dim=(-2, -1), keepdim=True).sqrt()


def auon_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    gamma: float,
    scale: str,
    keep: torch.Tensor | None = None,
) -> None:
    r"""One AuON step (paper v1 §3.1) on same-shaped matrices, in place::

        m ← β m + (1 − β) g;   u = (1 − β) g + β m  (nesterov; else u = m)
        X = u / (‖u‖_F + 1e-7);   U = X / (r + 1e-8),  r = cosh_rms(X, γ)
        p ← p·(1 − lr·λ) − lr·auon_scale(rows, cols)·U

    ``keep`` as in :func:`precond.optim.conda.conda_step_` (no host sync).
    """
    rows, cols = matrix_shape(params[0])
    sdt = state_dtype(params[0])
    g = zeroed(stack_as(grads, rows, cols, sdt), keep)
    buf = stack_as(momentum_buffers, rows, cols, sdt)
    buf.lerp_(g, masked(1.0 - momentum, keep, 0.0, sdt))
    write_back_(momentum_buffers, buf)
    u = g.lerp_(buf, momentum) if nesterov else buf.clone()
    x = u.div_(torch.linalg.matrix_norm(u, keepdim=True) + 1e-7)
    x.div_(cosh_rms(x, gamma) + 1e-8)
    delta = x.mul_(masked(-lr * auon_scale(rows, cols, scale), keep, 0.0, sdt))
    apply_matrix_update_(params, delta, decay=1.0 - lr * weight_decay, keep=keep)


class AuON(HybridOptimizer):
    r"""AuON (Maity 2025, "AuON: Alternative Unit-norm momentum updates by Normalized nonlinear scaling",
    arXiv 2509.24320, v1 §3.1) for matrices, AdamW for the rest.

    **What it is.**  The update is the Frobenius-normalized Nesterov momentum divided by ``r =
    sqrt(mean cosh²(γX))`` (:func:`auon_step_`).  Because ``X`` has unit Frobenius norm, ``r − 1 = O(1/(mn))``
    (:func:`cosh_rms`): the "cosh brake" is numerically a no-op and AuON *is* normalized-momentum SGD times the
    aspect factor.  It does not approximate an orthogonalization: the spectral norm of its update of a
    ``512×512`` Gaussian momentum is about ``0.09``, against ``1`` for Muon — the paper's large learning rates
    (``0.055``; ``0.24`` in the repo's current code) compensate for the per-entry size ``1/sqrt(mn)``.  Use it
    as a cheap baseline.  The repo's current ``AuON.step`` differs (``γ = 1.5``, no Frobenius normalization of
    the applied update, no aspect factor); this class follows the paper.

    Args:
        params: tensors, ``(name, tensor)`` pairs, param groups or an ``nn.Module`` (routing as
            :class:`precond.optim.Muon`; a group's ``matrix`` key overrides).
        lr: matrix learning rate (default ``0.055``, the paper's).
        momentum: ``β`` (default ``0.95``).
        nesterov: default ``True`` (the paper's lerp).
        weight_decay: decoupled (default ``0``).
        gamma: ``γ`` in ``cosh(γX)`` (default ``1``, the paper's).
        scale: ``"shape"`` (default, the paper's ``sqrt(max(1, m/n))``), ``"match_adamw"`` (entries of RMS
            ``0.2``: AdamW's lr range) or ``"none"``; see :func:`auon_scale`.
        adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay: the AdamW part (defaults ``0.055`` —
            the paper's AdamW lr ``0.003`` at ``lr = 0.055`` —, ``(0.9, 0.95)``, ``1e-8``, ``0``).
        nonfinite: as :class:`precond.optim.Conda` (no host sync).

    State of a matrix: ``momentum_buffer``, ``calls``, ``nonfinite_skips``.
    """

    optimizer_name = "AuON"

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float = 0.055,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        gamma: float = 1.0,
        scale: str = "shape",
        adam_lr_ratio: float = 0.055,
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
            scale=scale,
            **adam_hyperparameters(adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay),
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_matrix_group(self, group: dict[str, Any], where: str) -> None:
        check_momentum_like(group, where, nesterov=True)
        check_real(group, "gamma", where, low=0.0, high=10.0)
        check_choice(group, "scale", where, AUON_SCALES)

    def _init_matrix_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["momentum_buffer"] = matrix_zeros(p)

    def _step_batch(self, group: dict[str, Any], batch: MatrixBatch, keep: torch.Tensor | None) -> None:
        auon_step_(
            batch.params,
            batch.grads(),
            *batch.lists("momentum_buffer"),
            lr=group["lr"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            gamma=group["gamma"],
            scale=group["scale"],
            keep=keep,
        )
