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

**Relative damping (a deviation from the paper, off with** ``rel_damping=0`` **).**  The damping used is::

    λ_eff = max(λ, ρ · tr((1/m_eff) Gᵀ G)) = max(λ, ρ · mean_i |g_i|²)              (per window)

An absolute ``λ`` (the paper's 1e-5) is negligible against ``|g|²`` for most losses, and then ``F̂`` restricted
to the window's span has the condition number of ``G`` squared: for full-batch or nearly collinear windows
(``g_i = g + δ_i``, ``|δ| ≪ |g|``) ``F̂⁻¹ g`` is dominated by ``δ``-directions amplified by ``|g|²/|δ|²``, both
in exact arithmetic (steps that diverge whatever the lr) and in floating point (the ``d×m`` products lose
``κ(G)·ε``).  The floor ``ρ·tr`` bounds ``κ(F̂) ≤ 1 + 1/ρ`` and ``κ(M) ≤ 1 + 1/ρ`` whatever the window, scales
with the gradients (``F̂⁻¹`` is invariant to rescaling the loss, as with ``ρ`` alone), and leaves a large
absolute ``λ`` in charge (``λ → ∞`` is still SGD with ``lr/λ``).  The ``λ_eff`` of the last update is stored in
the window (one per batch member) and used by :func:`window_ihvp`.

**Precision.**  The window rows and the two ``d×m`` products (the Gram row of a new gradient, the combination
``Gᵀ c``) are in the window dtype (float32 by default, float64 on request); everything ``m×m`` — the Gram ``K``,
``M``, its Cholesky factor and the triangular solves — is float64 always (``O(m³)`` work, negligible next to
``O(d·m)``).  Measured relative error of :func:`window_ihvp_newest` against a dense float64 solve with the
same ``λ_eff`` (d = 400…1000, m = 8, λ = 1e-5, |g| ~ 30, three seeds; tests/linalg/test_woodbury.py):

* float32 window, ``ρ = 3e-2`` (M-FAC's default): ≤ 3e-6 on well-conditioned, ill-conditioned (singular values
  spanning 1e6), rank-deficient (repeated / dependent rows) and nearly collinear (``|δ|/|g|`` down to 1e-6)
  windows; ``ρ = 1e-3``: ≤ 7e-5 on the same windows;
* float32 window, ``ρ = 0``: ~2e-7 when well-conditioned, but 1e-3…0.15 on ill-conditioned windows and up to
  O(1) on rank-deficient or collinear ones — float32 ``d×m`` products cannot resolve ``κ(G) ≳ 1e4`` whatever
  the precision of the ``m×m`` solve (the pre-fix kernel, float32 throughout, measured the same: 0.13, 2.2, 0.99);
* float64 window: ≤ 1e-13 with ``ρ ≥ 1e-3``; ``ρ = 0``: ≤ 1e-8, and ≤ 1e-5 on collinear windows, where
  ``κ(F̂) ~ 1e11`` limits the dense oracle itself.

**Warm-up.**  Before the window is full only ``m_eff = min(added, m)`` rows are filled (they are always the
leading rows, the ring buffer wraps only once full), and ``F̂`` averages over those: ``1/m_eff``, not ``1/m``,
so the scale of ``F̂`` does not jump by ``m/m_eff`` when the window fills and the first steps are not ``m``
times longer than later ones.  Unfilled rows are zero, so ``M`` is block diagonal with ``m_eff·λ·I`` on the
unfilled part: the same formulas hold with static shapes, and the unfilled rows contribute nothing.

**Batching.**  Every tensor may carry leading batch dims (``G: [..., m, d]``): independent windows (blocks of
one flat parameter vector) that all receive a gradient at each update, so they share one ``added`` counter.

**Robustness.**  ``M`` is symmetric positive definite in exact arithmetic (``λ > 0``), and its float64
Cholesky succeeds whenever ``m_eff·λ_eff`` exceeds the rounding of ``K`` (always for ``ρ ≳ 1e-6``).  Where it
does not (``ρ = 0``, float32 Gram rows, ``|g|² ≫ λ``), :func:`damped_cholesky` adds a growing relative jitter
``J·I`` (from ``16·eps·trace/m`` of the window dtype, the rounding of the Gram rows) and the window then *is*
the damped Fisher with ``λ_eff + J/m_eff`` (stored, so :func:`window_ihvp`
stays consistent and the step stays the exact inverse of a slightly more damped ``F̂``); a non-finite ``M`` or
no factor after the last jitter raises ``ValueError`` — a NaN is never produced silently.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

#: First relative jitter (times ``trace(M)/m``) tried by :func:`damped_cholesky` when the float64 Cholesky fails;
#: it grows by 10x per retry, :data:`_JITTER_TRIES` times.  :func:`window_update_` starts at
#: ``max(CHOL_REL_JITTER, 16·eps)`` of the window dtype.
CHOL_REL_JITTER = 1e-10
_JITTER_TRIES = 8


class SlidingWindow(NamedTuple):
    """State of a batch of sliding windows (plain tensors, updated in place).

    Attributes:
        grads: ``[..., m, d]`` ring buffer of the last ``m`` gradients (row ``added % m`` is overwritten next),
            in the window dtype (that of the ``d×m`` products).
        gram: ``[..., m, m]`` float64 ``G Gᵀ``.
        chol: ``[..., m, m]`` float64 lower Cholesky factor of ``m_eff·λ_eff·I + G Gᵀ`` for the ``λ_eff`` of the
            last :func:`window_update_`; the identity while the window is empty.
        added: 0-d int64, gradients added so far (shared by the batch).
        damping: ``[...]`` float64 ``λ_eff`` of the last :func:`window_update_` (relative floor and any
            Cholesky jitter included); zero while the window is empty.
    """

    grads: torch.Tensor
    gram: torch.Tensor
    chol: torch.Tensor
    added: torch.Tensor
    damping: torch.Tensor


def window_new(
    num_grads: int,
    dim: int,
    batch: tuple[int, ...] = (),
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> SlidingWindow:
    """An empty window of ``num_grads`` gradients of size ``dim`` (``dtype``: rows and ``d×m`` products), per batch
    member; the ``m×m`` state is float64."""
    if num_grads < 1 or dim < 1:
        raise ValueError(f"window_new: need num_grads >= 1 and dim >= 1, got num_grads={num_grads}, dim={dim}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"window_new: dtype must be torch.float32 or torch.float64, got {dtype}")
    eye = torch.eye(num_grads, dtype=torch.float64, device=device)
    return SlidingWindow(
        grads=torch.zeros(*batch, num_grads, dim, dtype=dtype, device=device),
        gram=torch.zeros(*batch, num_grads, num_grads, dtype=torch.float64, device=device),
        chol=eye.expand(*batch, num_grads, num_grads).clone(),
        added=torch.zeros((), dtype=torch.int64, device=device),
        damping=torch.zeros(batch, dtype=torch.float64, device=device),
    )


def window_filled(window: SlidingWindow) -> int:
    """``m_eff = min(added, m)``, the number of filled rows (one host sync for a device counter)."""
    return min(int(window.added), window.grads.shape[-2])


def damped_cholesky(
    matrix: torch.Tensor, shift: torch.Tensor | float, rel_jitter: float = CHOL_REL_JITTER
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 lower Cholesky factor of ``matrix + (shift + J)·I`` for a batch of symmetric PSD ``matrix``.

    ``shift`` is a float or a tensor of the batch shape.  ``J`` is zero wherever the plain factor exists;
    members that fail get ``J = rel_jitter·trace/m``, growing 10x per try.  Returns ``(factor, jitter)``,
    both float64, ``jitter`` of the batch shape (``jitter > 0`` marks a fallback): the factor is exactly that of
    the more damped matrix, so callers can account for it.  ``O(m³)`` per member; one host sync (the success
    flag).

    Raises ``ValueError`` if ``matrix`` or ``shift`` is not finite (it would otherwise yield a NaN factor) or if
    no factor exists after the last jitter (``matrix`` far from PSD).
    """
    m = matrix.shape[-1]
    wide = matrix.to(torch.float64)
    eye = torch.eye(m, dtype=torch.float64, device=matrix.device)
    shift = torch.as_tensor(shift, dtype=torch.float64, device=matrix.device).expand(matrix.shape[:-2])
    shifted = wide + shift[..., None, None] * eye
    factor, info = torch.linalg.cholesky_ex(shifted)
    jitter = torch.zeros_like(shift)
    bad = (info != 0) | ~torch.isfinite(factor).flatten(-2).all(-1)
    if not bool(bad.any()):
        return factor, jitter
    if not (bool(torch.isfinite(wide).all()) and bool(torch.isfinite(shift).all())):
        raise ValueError("damped_cholesky: the matrix has non-finite entries (a non-finite gradient in the window?)")
    scale = shifted.diagonal(dim1=-2, dim2=-1).sum(-1).abs() / m + torch.finfo(torch.float64).tiny
    for k in range(_JITTER_TRIES):
        jitter = torch.where(bad, rel_jitter * 10.0**k * scale, jitter)
        again, info = torch.linalg.cholesky_ex(shifted + jitter[..., None, None] * eye)
        factor = torch.where(bad[..., None, None], again, factor)
        bad = bad & (info != 0)
        if not bool(bad.any()):
            return factor, jitter
    raise ValueError(
        f"damped_cholesky: no factor after {_JITTER_TRIES} jitter retries up to "
        f"{rel_jitter * 10.0 ** (_JITTER_TRIES - 1):g}·trace/m (matrix not PSD?)"
    )


def _check_damping(damping: float, rel_damping: float) -> None:
    if (
        isinstance(damping, bool)
        or not isinstance(damping, (int, float))
        or not (math.isfinite(damping) and damping > 0)
    ):
        raise ValueError(f"window_update_: damping must be a finite number > 0, got {damping!r}")
    if (
        isinstance(rel_damping, bool)
        or not isinstance(rel_damping, (int, float))
        or not (math.isfinite(rel_damping) and rel_damping >= 0)
    ):
        raise ValueError(f"window_update_: rel_damping must be a finite number >= 0, got {rel_damping!r}")


def window_update_(window: SlidingWindow, grad: torch.Tensor, damping: float, rel_damping: float = 0.0) -> torch.Tensor:
    """Add ``grad`` (``[..., d]``) to every window of the batch, replacing the oldest row once full.

    Writes row ``added % m`` of ``grads``, the matching row and column of ``gram`` (``O(d·m)`` in the window
    dtype: the new row's dot products with the window, computed from the stored rows so ``gram`` is exactly
    ``G Gᵀ`` of what is stored), increments ``added``, sets ``λ_eff = max(damping, rel_damping·tr(gram)/m_eff)``
    per member and refactors ``m_eff·λ_eff·I + gram`` in float64 with :func:`damped_cholesky` (``O(m³)``).
    Every entry of ``gram`` is recomputed from scratch when one of its two rows is written, so nothing drifts
    however long the window runs.  ``window.damping`` receives ``λ_eff`` plus any Cholesky jitter over
    ``m_eff``; the jitter ladder starts at ``16·eps(window dtype)·trace/m`` (the rounding of float32 Gram rows,
    below which a pivot is noise).  Returns the bool ``fallbacks`` (batch shape): members that needed a jitter.
    """
    _check_damping(damping, rel_damping)
    grads, gram = window.grads, window.gram
    m = grads.shape[-2]
    slot = int(window.added) % m
    grads[..., slot, :] = grad
    row = torch.einsum("...md,...d->...m", grads, grads[..., slot, :]).to(torch.float64)
    gram[..., slot, :] = row
    gram[..., :, slot] = row
    window.added.add_(1)
    filled = window_filled(window)
    lam = torch.full(gram.shape[:-2], float(damping), dtype=torch.float64, device=gram.device)
    if rel_damping > 0:
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        lam = torch.maximum(lam, trace * (float(rel_damping) / filled))
    # a pivot below the rounding of the Gram rows (~eps·trace in the window dtype) is noise: start the jitter there
    rel_jitter = max(CHOL_REL_JITTER, 16 * torch.finfo(grads.dtype).eps)
    factor, jitter = damped_cholesky(gram, filled * lam, rel_jitter)
    window.chol.copy_(factor)
    window.damping.copy_(lam + jitter / filled)
    return jitter > 0


def _require_filled(window: SlidingWindow, where: str) -> int:
    count = int(window.added)
    if count < 1:
        raise ValueError(f"{where}: the window is empty; call window_update_ first")
    return count


def window_ihvp(window: SlidingWindow, vec: torch.Tensor) -> torch.Tensor:
    """``F̂⁻¹ v = (1/λ_eff)·(v − Gᵀ M⁻¹ G v)`` for any ``v`` (``[..., d]``), ``O(d·m + m²)``.

    ``λ_eff`` is the one stored by the last :func:`window_update_` (the factor is of ``m_eff·λ_eff·I + G Gᵀ``).
    The ``d×m`` products are in the window dtype, the solve in float64; returned in the promotion of the window
    dtype and ``v``'s.  For ``v`` in the window prefer :func:`window_ihvp_newest` (no cancellation).  Raises on
    an empty window.
    """
    _require_filled(window, "window_ihvp")
    dtype = window.grads.dtype
    v = vec.to(dtype)
    proj = torch.einsum("...md,...d->...m", window.grads, v).to(torch.float64)
    coeffs = torch.cholesky_solve(proj[..., None], window.chol)[..., 0].to(dtype)
    out = (v - torch.einsum("...md,...m->...d", window.grads, coeffs)) / window.damping.to(dtype)[..., None]
    return out.to(torch.promote_types(vec.dtype, dtype))


def window_ihvp_newest(window: SlidingWindow) -> torch.Tensor:
    """``F̂⁻¹ g`` for the gradient ``g`` added by the last :func:`window_update_`: ``m_eff·Gᵀ M⁻¹ e_slot``.

    ``O(d·m + m²)`` (one float64 triangular-solve pair on a unit vector, one ``m×d`` mat-vec in the window
    dtype), no cancellation.  In the window dtype, shape ``[..., d]``.  Raises on an empty window.
    """
    count = _require_filled(window, "window_ihvp_newest")
    m = window.grads.shape[-2]
    unit = torch.zeros(*window.chol.shape[:-1], 1, dtype=torch.float64, device=window.chol.device)
    unit[..., (count - 1) % m, :] = 1.0
    coeffs = torch.cholesky_solve(unit, window.chol)[..., 0] * min(count, m)
    return torch.einsum("...md,...m->...d", window.grads, coeffs.to(window.grads.dtype))
