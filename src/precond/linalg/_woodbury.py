r"""Sliding-window inverse of a damped empirical Fisher by the Woodbury identity (M-FAC's dense variant).

Frantar, Kurtic, Alistarh, "M-FAC: Efficient Matrix-Free Approximations of Second-Order Information",
NeurIPS 2021, arXiv 2107.03356, §4 (the sliding-window algorithm for optimization).

The curvature estimate is the damped empirical Fisher over the last ``m`` gradients ``g_1 … g_m`` (rows of
``G``)::

    F̂ = λ·I + (1/m_eff) · Σ_i g_i g_iᵀ = λ·I + (1/m_eff) · Gᵀ G

and its inverse is never formed: by Woodbury, with the small ``m×m`` system ``M = m_eff·λ·I + G Gᵀ``::

    F̂⁻¹ v = (1/λ) · (v − Gᵀ M⁻¹ G v)                                           (window_ihvp)

so an inverse-Hessian-vector product (IHVP) costs ``O(d·m + m²)`` given a Cholesky factor of ``M``
(two ``m×d`` mat-vecs plus two triangular solves), and replacing the oldest gradient costs ``O(d·m + m³)``:
one new row/column of the Gram ``K = G Gᵀ`` (``O(d·m)``) and a fresh Cholesky factor (``O(m³)``).  These are
the paper's complexities; the paper reaches the same bounds with its own recurrences for the coefficients,
this module uses an explicit Gram matrix and Cholesky, which is simpler to batch and to make robust.

For a vector that *is* one of the window rows, ``v = Gᵀ e_j``, the product needs no cancellation at all::

    F̂⁻¹ Gᵀ e_j = m_eff · Gᵀ M⁻¹ e_j                                             (window_ihvp_newest)

(check: ``F̂ · m_eff Gᵀ M⁻¹ e_j = Gᵀ (m_eff λ I + G Gᵀ) M⁻¹ e_j = Gᵀ e_j``).  The general form subtracts two
nearly equal vectors and divides by λ, which loses ``log10(|g|²/(m_eff·λ))`` digits; the row form does not and
is cheaper (no ``G v``).  M-FAC's step preconditions the gradient it has just added, so it uses the row form.

**Warm-up.**  Before the window is full only ``m_eff = min(added, m)`` rows are filled (they are always the
leading rows, the ring buffer wraps only once full), and ``F̂`` averages over those: ``1/m_eff``, not ``1/m``,
so the scale of ``F̂`` does not jump by ``m/m_eff`` when the window fills and the first steps are not ``m``
times longer than later ones.  Unfilled rows are zero, so ``M`` is block diagonal with ``m_eff·λ`` on the
unfilled part: the same formulas hold with static shapes, and the unfilled rows contribute nothing.  With an
empty window ``F̂⁻¹ v = v/λ``.

**Batching.**  Every tensor may carry leading batch dims (``G: [..., m, d]``): independent windows (blocks of
one flat parameter vector) that all receive a gradient at each update, so they share one ``added`` counter.

**Robustness.**  ``M`` is symmetric positive definite in exact arithmetic (``λ > 0``), but with ``|g|² ≫ λ``
float32 Cholesky can fail.  :func:`damped_cholesky` retries in float64, then adds a growing relative jitter;
a non-finite ``M`` raises ``ValueError`` — a NaN is never produced silently.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: First relative jitter (times ``trace(M)/m``) tried when the float64 Cholesky of ``M`` still fails; it grows
#: by 10x per retry, :data:`_JITTER_TRIES` times.
CHOL_REL_JITTER = 1e-10
_JITTER_TRIES = 8


class SlidingWindow(NamedTuple):
    """State of a batch of sliding windows (plain tensors, updated in place).

    Attributes:
        grads: ``[..., m, d]`` ring buffer of the last ``m`` gradients (row ``added % m`` is overwritten next).
        gram: ``[..., m, m]`` ``G Gᵀ`` in the solve dtype (float32 or float64).
        chol: ``[..., m, m]`` lower Cholesky factor of ``m_eff·λ·I + G Gᵀ`` (solve dtype), for the ``λ`` of the
            last :func:`window_update_`; the identity while the window is empty.
        added: 0-d int64, gradients added so far (shared by the batch).
    """

    grads: torch.Tensor
    gram: torch.Tensor
    chol: torch.Tensor
    added: torch.Tensor


def window_new(
    num_grads: int,
    dim: int,
    batch: tuple[int, ...] = (),
    *,
    dtype: torch.dtype = torch.float32,
    solve_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> SlidingWindow:
    """An empty window of ``num_grads`` gradients of size ``dim`` (``dtype``), per batch member."""
    if num_grads < 1 or dim < 1:
        raise ValueError(f"window_new: need num_grads >= 1 and dim >= 1, got num_grads={num_grads}, dim={dim}")
    eye = torch.eye(num_grads, dtype=solve_dtype, device=device)
    return SlidingWindow(
        grads=torch.zeros(*batch, num_grads, dim, dtype=dtype, device=device),
        gram=torch.zeros(*batch, num_grads, num_grads, dtype=solve_dtype, device=device),
        chol=eye.expand(*batch, num_grads, num_grads).clone(),
        added=torch.zeros((), dtype=torch.int64, device=device),
    )


def window_filled(window: SlidingWindow) -> int:
    """``m_eff = min(added, m)``, the number of filled rows (one host sync for a device counter)."""
    return min(int(window.added), window.grads.shape[-2])


def damped_cholesky(matrix: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower Cholesky factor of ``matrix + shift·I`` for a batch of symmetric PSD ``matrix``, robustly.

    The ladder: Cholesky in the input dtype → members that fail are redone in float64 → members that still
    fail get ``jitter·I`` added, ``jitter = CHOL_REL_JITTER·trace/m`` growing 10x per try.  Returns
    ``(factor, fallbacks)``: the factor in the input dtype and a bool tensor (batch shape) marking members
    that needed a fallback.  ``O(m³)`` per member; one host sync (the success flag).

    Raises ``ValueError`` if ``matrix`` is not finite (it would otherwise yield a NaN factor).
    """
    m = matrix.shape[-1]
    eye = torch.eye(m, dtype=matrix.dtype, device=matrix.device)
    shifted = matrix + shift * eye
    factor, info = torch.linalg.cholesky_ex(shifted)
    failed = (info != 0) | ~torch.isfinite(factor).flatten(-2).all(-1)
    if not bool(failed.any()):
        return factor, failed
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("damped_cholesky: the matrix has non-finite entries (a non-finite gradient in the window?)")
    wide = shifted.to(torch.float64)
    eye64 = eye.to(torch.float64)
    scale = wide.diagonal(dim1=-2, dim2=-1).sum(-1).abs() / m + torch.finfo(torch.float64).tiny
    retry, info = torch.linalg.cholesky_ex(wide)
    for k in range(_JITTER_TRIES + 1):
        bad = info != 0
        if not bool(bad.any()):
            break
        if k == _JITTER_TRIES:
            raise ValueError(f"damped_cholesky: no factor after {_JITTER_TRIES} jitter retries (matrix not PSD?)")
        jitter = CHOL_REL_JITTER * 10.0**k * scale
        again, info_again = torch.linalg.cholesky_ex(wide + jitter[..., None, None] * eye64)
        retry = torch.where(bad[..., None, None], again, retry)
        info = torch.where(bad, info_again, info)
    factor = torch.where(failed[..., None, None], retry.to(matrix.dtype), factor)
    return factor, failed


def window_update_(window: SlidingWindow, grad: torch.Tensor, damping: float) -> torch.Tensor:
    """Add ``grad`` (``[..., d]``) to every window of the batch, replacing the oldest row once full.

    Writes row ``added % m`` of ``grads``, the matching row and column of ``gram`` (``O(d·m)``: the new row's
    dot products with the window, computed from the stored rows so ``gram`` is exactly ``G Gᵀ`` of what is
    stored), increments ``added`` and refactors ``m_eff·λ·I + gram`` with :func:`damped_cholesky` (``O(m³)``).
    Every entry of ``gram`` is recomputed from scratch when one of its two rows is written, so nothing drifts
    however long the window runs.  Returns the bool ``fallbacks`` of :func:`damped_cholesky`.
    """
    if not damping > 0:
        raise ValueError(f"window_update_: damping must be > 0, got {damping!r}")
    grads, gram = window.grads, window.gram
    m = grads.shape[-2]
    slot = int(window.added) % m
    grads[..., slot, :] = grad
    row = torch.einsum("...md,...d->...m", grads.to(gram.dtype), grads[..., slot, :].to(gram.dtype))
    gram[..., slot, :] = row
    gram[..., :, slot] = row
    window.added.add_(1)
    filled = window_filled(window)
    factor, fallbacks = damped_cholesky(gram, filled * float(damping))
    window.chol.copy_(factor)
    return fallbacks


def window_ihvp(window: SlidingWindow, vec: torch.Tensor, damping: float) -> torch.Tensor:
    """``F̂⁻¹ v = (1/λ)·(v − Gᵀ M⁻¹ G v)`` for any ``v`` (``[..., d]``), ``O(d·m + m²)``.

    ``damping`` must be the ``λ`` of the last :func:`window_update_` (the stored factor is of ``m_eff·λ·I +
    G Gᵀ``).  Computed in the solve dtype (that of ``gram``); returned in the promotion of it and ``v``'s dtype.
    For ``v`` in the window prefer :func:`window_ihvp_newest` (no cancellation).
    """
    dtype = window.gram.dtype
    grads = window.grads.to(dtype)
    v = vec.to(dtype)
    coeffs = torch.cholesky_solve(torch.einsum("...md,...d->...m", grads, v)[..., None], window.chol)[..., 0]
    out = (v - torch.einsum("...md,...m->...d", grads, coeffs)) / damping
    return out.to(torch.promote_types(vec.dtype, dtype))


def window_ihvp_newest(window: SlidingWindow) -> torch.Tensor:
    """``F̂⁻¹ g`` for the gradient ``g`` added by the last :func:`window_update_`: ``m_eff·Gᵀ M⁻¹ e_slot``.

    ``O(d·m + m²)`` (one triangular-solve pair on a unit vector, one ``m×d`` mat-vec), no ``λ`` argument (it is
    in the factor), no cancellation.  In the solve dtype, shape ``[..., d]``.  Raises on an empty window.
    """
    count = int(window.added)
    if count < 1:
        raise ValueError("window_ihvp_newest: the window is empty; call window_update_ first")
    m = window.grads.shape[-2]
    dtype = window.gram.dtype
    unit = torch.zeros(*window.chol.shape[:-1], 1, dtype=dtype, device=window.chol.device)
    unit[..., (count - 1) % m, :] = 1.0
    coeffs = torch.cholesky_solve(unit, window.chol)[..., 0]
    return min(count, m) * torch.einsum("...md,...m->...d", window.grads.to(dtype), coeffs)
