"""SVD-free low-rank optimizers by DCT column selection: DCT-AdamW and Trion (Modoranu, Safaryan, Schultheis,
Ryabinin, Chumachenko, Alistarh 2025, "FFT-based Dynamic Subspace Selection for Low-Rank Adaptive Optimization
of LLMs", arXiv 2505.17967).

Instead of GaLore's SVD, a matrix ``A ∈ R^{m×n}`` (``m >= n``, "right") is projected onto ``r`` columns of the
fixed orthogonal DCT basis ``Q`` (:func:`precond.linalg.dct_basis`, ``n × n``): ``S = A Q`` (by a matrix
product or Makhoul's FFT, :func:`precond.linalg.dct_rows`), the ``r`` columns of largest ℓ1 norm are kept
(indices ``i``), the low-rank matrix is ``a = S[:, i]`` and it goes back as ``a Q[:, i]ᵀ``.  ``m < n`` is the
transpose ("left": ``S = Qᵀ A``, rows ranked).  Only the ``r`` indices are stored per layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from precond.linalg import MUON_COEFFICIENTS, dct_basis, dct_rows, newton_schulz
from precond.optim._adam import bias_correction
from precond.optim._common import (
    check_adamw_like,
    check_bool,
    check_choice,
    check_int,
    check_momentum_like,
    check_ns,
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

SIMILARITIES = ("matmul", "makhoul")


# ---------------------------------------------------------------------------------------------- column selection
def resolve_rank(rank: int | float, rows: int, cols: int) -> int:
    """The number of DCT columns kept for a ``rows × cols`` matrix: ``rank`` (an int, capped at ``min(rows,
    cols)``) or a fraction in ``(0, 1]`` of ``min(rows, cols)`` (rounded up)."""
    short = min(rows, cols)
    if isinstance(rank, float):
        return max(1, min(short, math.ceil(rank * short)))
    return min(short, rank)


def dct_similarity(a: torch.Tensor, right: bool, method: str = "matmul") -> torch.Tensor:
    """``S = A Q`` (right) or ``Qᵀ A`` (left) for a batch ``[B, m, n]``, by matrix product or FFT."""
    size = a.shape[-1] if right else a.shape[-2]
    if method == "makhoul":
        return dct_rows(a) if right else dct_rows(a.mT).mT
    q = dct_basis(size, a.dtype, a.device)
    return a @ q if right else q.mT @ a


def select_columns(similarity: torch.Tensor, rank: int, right: bool) -> torch.Tensor:
    """Indices ``[B, r]`` (ascending) of the ``r`` DCT columns (right) or rows (left) of largest ℓ1 norm."""
    scores = similarity.abs().sum(dim=-2 if right else -1)
    return torch.topk(scores, rank, dim=-1).indices.sort(dim=-1).values


def gather_columns(similarity: torch.Tensor, indices: torch.Tensor, right: bool) -> torch.Tensor:
    """The selected columns ``S[:, i]`` ``[B, m, r]`` (right) or rows ``S[i, :]`` ``[B, r, n]`` (left)."""
    b, m, n = similarity.shape
    if right:
        return similarity.gather(-1, indices[:, None, :].expand(b, m, indices.shape[1]))
    return similarity.gather(-2, indices[:, :, None].expand(b, indices.shape[1], n))


def selected_basis(size: int, indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``Q[:, i]ᵀ`` per member: ``[B, r, size]``."""
    return dct_basis(size, dtype, indices.device).mT[indices]


def project_low_rank(a: torch.Tensor, basis_t: torch.Tensor, right: bool) -> torch.Tensor:
    """``A Q_r`` (right) or ``Q_rᵀ A`` (left), ``basis_t = Q_rᵀ``."""
    return a @ basis_t.mT if right else basis_t @ a


def back_from_low_rank(x: torch.Tensor, basis_t: torch.Tensor, right: bool) -> torch.Tensor:
    """``x Q_rᵀ`` (right) or ``Q_r x`` (left): the full-size matrix of a low-rank one."""
    return x @ basis_t if right else basis_t.mT @ x


def _sizes(p: torch.Tensor) -> tuple[int, int, bool]:
    rows, cols = matrix_shape(p)
    return rows, cols, rows >= cols


# ---------------------------------------------------------------------------------------------- DCT-AdamW
def dct_adamw_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    indices: list[torch.Tensor],
    steps: list[torch.Tensor],
    errors: list[torch.Tensor] | None,
    *,
    rank: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    select: bool,
    rotate_subspace: bool = False,
    similarity: str = "matmul",
    keep: torch.Tensor | None = None,
) -> None:
    r"""One DCT-AdamW step on same-shaped matrices, in place (the authors' ``fft_low_rank/dct_adamw.py``)::

        A = g (+ E with error feedback)
        if select:  i = top-r ℓ1 columns of S = A Q;  a = S[:, i]      else  a = A Q[:, i]
        E = A − a Q_rᵀ                                                (error feedback)
        (rotate_subspace, on a new selection: m ← m R, v ← |v R|, R = Q_prevᵀ Q_r, here a 0/1 overlap matrix)
        m ← β1·m + (1 − β1)·a,   v ← β2·v + (1 − β2)·a²                (r-dimensional: [m, r] or [r, n])
        p ← p·(1 − lr·λ) − lr/(1 − β1ᵗ) · (m / (sqrt(v)/sqrt(1 − β2ᵗ) + eps)) Q_rᵀ

    (the authors' ``m/(eps·sqrt(bc2) + sqrt(v))·sqrt(bc2)/bc1`` is the same expression).  ``indices`` are
    ``[r]`` int64, ``errors`` full matrices or ``None``.  ``keep`` as in :func:`precond.optim.conda.conda_step_`
    (everything here is maskable: no host sync).
    """
    rows, cols, right = _sizes(params[0])
    beta1, beta2 = betas
    sdt = state_dtype(params[0])
    size = cols if right else rows
    a_full = zeroed(stack_as(grads, rows, cols, sdt), keep)
    if errors is not None:
        a_full = a_full + stack_as(errors, rows, cols, sdt)
    old_idx = torch.stack(indices)
    if select:
        sim = dct_similarity(a_full, right, similarity)
        new_idx = select_columns(sim, rank, right)
        idx = new_idx if keep is None else torch.where(keep, new_idx, old_idx)
        low = gather_columns(sim, idx, right)
    else:
        idx = old_idx
        low = project_low_rank(a_full, selected_basis(size, idx, sdt), right)
    basis_t = selected_basis(size, idx, sdt)
    if errors is not None:
        err = a_full - back_from_low_rank(low, basis_t, right)
        write_back_(errors, err if keep is None else torch.where(keep, err, stack_as(errors, rows, cols, sdt)))
    m = torch.stack(exp_avgs)
    v = torch.stack(exp_avg_sqs)
    if select and rotate_subspace:
        overlap = (old_idx[:, :, None] == idx[:, None, :]).to(sdt)  # R = Q_prevᵀ Q_r for orthonormal Q
        m = m @ overlap if right else overlap.mT @ m
        v = (v @ overlap).abs() if right else (overlap.mT @ v).abs()
    write_back_(indices, idx)
    m.lerp_(low, masked(1.0 - beta1, keep, 0.0, sdt))
    v.mul_(masked(beta2, keep, 1.0, sdt)).addcmul_(low, low, value=1.0 - beta2)
    if keep is not None and select and rotate_subspace:  # the rotation is not a multiplicative mask
        m = torch.where(keep, m, torch.stack(exp_avgs))
        v = torch.where(keep, v, torch.stack(exp_avg_sqs))
    write_back_(exp_avgs, m)
    write_back_(exp_avg_sqs, v)
    torch._foreach_add_(steps, 1.0 if keep is None else keep.to(steps[0].dtype))
    t = torch.stack(steps).to(torch.float64)
    step_size_neg = masked((-lr / bias_correction(beta1, t)).to(sdt), keep, 0.0)
    bc2_sqrt = bias_correction(beta2, t).sqrt().to(sdt)
    denom = (v.sqrt() / bc2_sqrt.view(-1, 1, 1)).add_(eps)
    delta = back_from_low_rank((m * step_size_neg.view(-1, 1, 1)) / denom, basis_t, right)
    apply_matrix_update_(params, delta, decay=1.0 - lr * weight_decay, keep=keep)


def _check_rank(group: dict[str, Any], where: str) -> None:
    rank = group["rank"]
    ok = (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1) or (
        isinstance(rank, float) and 0.0 < rank <= 1.0
    )
    if not ok:
        raise ValueError(
            f"{where}: invalid rank={rank!r}: must be an integer >= 1 (columns kept) or a float in (0, 1] "
            "(a fraction of the shorter side)"
        )


class DCTAdamW(HybridOptimizer):
    r"""DCT-AdamW (Modoranu et al. 2025, arXiv 2505.17967): AdamW with ``r``-dimensional moments in a subspace
    spanned by ``r`` DCT basis vectors, chosen by the ℓ1 norm of the gradient's DCT (no SVD).

    The math is :func:`dct_adamw_step_`.  Differences from the authors' code: one DCT matrix per size (cached by
    :func:`precond.linalg.dct_basis`; the reference builds one from the first layer and reuses it for every
    layer, wrong when the layers' shorter sides differ), no hard-coded shape exceptions, selected indices kept
    in ascending order (the reference's ``topk`` order is unspecified), and the rest of the model's params
    (biases, gains and — by name, as :class:`precond.optim.Muon` routes them — embeddings and heads; the
    authors use a ``max_shape=32000`` cut) run full AdamW with the same hyperparameters in the same optimizer.

    Args:
        params: tensors, ``(name, tensor)`` pairs, param groups or an ``nn.Module``; a group's ``matrix`` key
            overrides the routing.
        lr, betas, eps, weight_decay: AdamW's (defaults ``1e-3``, ``(0.9, 0.999)``, ``1e-8``, ``0``).
        rank: DCT columns kept per matrix: an integer (capped at the shorter side) or a fraction in ``(0, 1]`` of
            the shorter side (default ``128``).
        update_proj_gap: steps between column selections (default ``1``: every step, the authors' default; it
            costs one DCT of the gradient).
        rotate_subspace: on a new selection carry the moments over (``m ← m R``, ``v ← |v R|``; default
            ``False``: the moments are reused position by position, as the authors default to).
        error_feedback: keep the part of the gradient outside the subspace and add it to the next gradient
            (default ``False``; costs a full matrix of state).
        similarity: ``"matmul"`` (default, ``A Q``) or ``"makhoul"`` (the same DCT by FFT, ``O(mn log n)``).
        nonfinite: as :class:`precond.optim.Conda` (every step here is maskable: no host sync).

    State of a matrix: ``exp_avg``/``exp_avg_sq`` (``[rows, r]`` or ``[r, cols]``), ``indices`` (``[r]`` int64),
    ``step``, ``calls``, ``error`` (full, with error feedback), ``nonfinite_skips``.
    """

    optimizer_name = "DCTAdamW"
    refresh_key = "update_proj_gap"  # a refresh selects new columns (maskable: no host sync)
    shares_adam_settings = True

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int | float = 128,
        update_proj_gap: int = 1,
        rotate_subspace: bool = False,
        error_feedback: bool = False,
        similarity: str = "matmul",
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            rank=rank,
            update_proj_gap=update_proj_gap,
            rotate_subspace=rotate_subspace,
            error_feedback=error_feedback,
            similarity=similarity,
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_matrix_group(self, group: dict[str, Any], where: str) -> None:
        check_adamw_like(group, where)
        _check_rank(group, where)
        check_int(group, "update_proj_gap", where, low=1)
        check_bool(group, "rotate_subspace", where)
        check_bool(group, "error_feedback", where)
        check_choice(group, "similarity", where, SIMILARITIES)

    def _init_matrix_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        rows, cols, right = _sizes(p)
        r = resolve_rank(group["rank"], rows, cols)
        shape = (rows, r) if right else (r, cols)
        sdt = state_dtype(p)
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros(shape, dtype=sdt, device=p.device)
        state["exp_avg_sq"] = torch.zeros(shape, dtype=sdt, device=p.device)
        state["indices"] = torch.arange(r, dtype=torch.int64, device=p.device)
        if group["error_feedback"]:
            state["error"] = matrix_zeros(p)

    def _step_batch(self, group: dict[str, Any], batch: MatrixBatch, keep: torch.Tensor | None) -> None:
        exp_avgs, exp_avg_sqs, indices, steps = batch.lists("exp_avg", "exp_avg_sq", "indices", "step")
        errors = batch.lists("error")[0] if all("error" in s for s in batch.states) else None
        dct_adamw_step_(
            batch.params,
            batch.grads(),
            exp_avgs,
            exp_avg_sqs,
            indices,
            steps,
            errors,
            rank=batch.states[0]["indices"].numel(),
            lr=group["lr"],
            betas=tuple(group["betas"]),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            select=batch.refresh,
            rotate_subspace=group["rotate_subspace"] and batch.states[0]["calls"] > 0,
            similarity=group["similarity"],
            keep=keep,
        )


# ---------------------------------------------------------------------------------------------- Trion
def trion_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    *,
    rank: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
    scale: str = "shape",
    similarity: str = "matmul",
    keep: torch.Tensor | None = None,
) -> None:
    r"""One Trion step on same-shaped matrices, in place (the authors' ``fft_low_rank/trion.py``: Dion with DCT
    column selection in place of power iteration and QR, and Newton–Schulz)::

        M ← M + g;   i = top-r ℓ1 columns of S = M Q;   a = S[:, i]
        M ← M − (1 − μ)·a Q_rᵀ                          (error feedback: μ of the captured part stays)
        p ← p·(1 − lr·λ) − lr·scale(rows, cols)·NS(a) Q_rᵀ

    ``scale`` as :func:`precond.optim.muon.update_scale` (``"shape"``: the authors' ``sqrt(max(1, R/C))``).
    ``keep`` as in :func:`precond.optim.conda.conda_step_` (no host sync).
    """
    rows, cols, right = _sizes(params[0])
    sdt = state_dtype(params[0])
    size = cols if right else rows
    buf = stack_as(momentum_buffers, rows, cols, sdt)
    buf.add_(zeroed(stack_as(grads, rows, cols, sdt), keep))
    sim = dct_similarity(buf, right, similarity)
    idx = select_columns(sim, rank, right)
    low = gather_columns(sim, idx, right)
    basis_t = selected_basis(size, idx, sdt)
    buf.add_(back_from_low_rank(low, basis_t, right) * masked(-(1.0 - momentum), keep, 0.0, sdt))
    write_back_(momentum_buffers, buf)
    ortho = newton_schulz(low, ns_steps, ns_coefficients, eps)
    delta = back_from_low_rank(ortho, basis_t, right).mul_(
        masked(-lr * update_scale(rows, cols, scale), keep, 0.0, sdt)
    )
    apply_matrix_update_(params, delta, decay=1.0 - lr * weight_decay, keep=keep)


class Trion(HybridOptimizer):
    r"""Trion (Modoranu et al. 2025, arXiv 2505.17967): Dion's low-rank orthonormalized update with the subspace
    chosen by DCT column selection (no power iteration, no QR) and orthogonalized by Newton–Schulz; the rest of
    the params run AdamW at ``lr · adam_lr_ratio``.

    The math is :func:`trion_step_`.  Routing as :class:`precond.optim.Muon` (a group's ``matrix`` key
    overrides).  The authors run the matrices at ``lr = 0.02`` and the AdamW group at ``3e-4``
    (``adam_lr_ratio = 0.015``, the default); ``scale="match_adamw"`` with ``adam_lr_ratio=1`` is Moonshot's
    one-lr recipe, as ``precond.optim.create("trion", ...)`` uses.

    Args:
        params: tensors, ``(name, tensor)`` pairs, param groups or an ``nn.Module``.
        lr: matrix learning rate (default ``0.02``).
        momentum: error-feedback factor ``μ`` (default ``0.95``).
        weight_decay: decoupled (default ``0``).
        rank: as :class:`DCTAdamW` (default ``128``).
        ns_steps, ns_coefficients, eps: Newton–Schulz, as :class:`precond.optim.Muon`.
        scale: ``"shape"`` (default, the authors' ``sqrt(max(1, R/C))``), ``"match_adamw"`` (``0.2·sqrt(max(R, C))``,
            Moonshot/Kimi) or ``"none"``.
        similarity: ``"matmul"`` or ``"makhoul"`` (FFT).
        adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay: the AdamW part (defaults ``0.015``,
            ``(0.9, 0.95)``, ``1e-8``, ``0``).
        nonfinite: as :class:`precond.optim.Conda` (no host sync).

    State of a matrix: ``momentum_buffer`` (full, the error-feedback accumulator), ``calls``, ``nonfinite_skips``.
    """

    optimizer_name = "Trion"

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        rank: int | float = 128,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
        eps: float = 1e-7,
        scale: str = "shape",
        similarity: str = "matmul",
        adam_lr_ratio: float = 0.015,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
        adam_weight_decay: float = 0.0,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            rank=rank,
            ns_steps=ns_steps,
            ns_coefficients=ns_coefficients,
            eps=eps,
            scale=scale,
            similarity=similarity,
            **adam_hyperparameters(adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay),
        )
        super().__init__(params, defaults, nonfinite)

    def _validate_matrix_group(self, group: dict[str, Any], where: str) -> None:
        check_momentum_like(group, where, nesterov=False)
        _check_rank(group, where)
        check_ns(group, where)
        check_choice(group, "scale", where, SCALES)
        check_choice(group, "similarity", where, SIMILARITIES)

    def _init_matrix_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["momentum_buffer"] = matrix_zeros(p)

    def _step_batch(self, group: dict[str, Any], batch: MatrixBatch, keep: torch.Tensor | None) -> None:
        trion_step_(
            batch.params,
            batch.grads(),
            *batch.lists("momentum_buffer"),
            rank=resolve_rank(group["rank"], *matrix_shape(batch.params[0])),
            lr=group["lr"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            ns_steps=group["ns_steps"],
            ns_coefficients=tuple(group["ns_coefficients"]),
            eps=group["eps"],
            scale=group["scale"],
            similarity=group["similarity"],
            keep=keep,
        )
