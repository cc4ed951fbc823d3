"""SOAP's step function and eigenbasis refresh as they were before issue 18's hot-path changes (precond at b5290c7),
kept verbatim as the "same math" oracle of ``test_soap_hot_paths.py`` with one marked exception: the masked factor
decay is built in the factor's dtype (it was a float32 constant, which rounded ``shampoo_beta`` for float64 state on
masked steps only; the fused decay of ``accumulate_gram_`` uses the exact value on every step)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from precond.linalg import contract_all_but, eigh_robust, project, project_back
from precond.optim._adam import adam_direction_, bias_correction, compiled_adam_direction
from precond.optim._common import masked

_ABS_FLOOR = 1e-30


def refresh_eigenbasis_before(factors: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One warm-started step of orthogonal (power) iteration, column order preserved.

    SOAP's refresh (Vyas et al. 2024, Alg. 4): estimate eigenvalues ``diag(Qᵀ A Q)``, orthogonalise the
    columns of ``A Q`` in descending order of that estimate (``qr``), and put each new column back in the slot
    of the column it came from.  Keeping slots fixed means the Adam second moment, which is indexed by slot,
    stays aligned with no permutation (the reference instead sorts ``Q`` and permutes ``v``; the two are the
    same up to a relabelling).  A member whose result is non-finite keeps its old basis; returns
    ``(basis, failed)``.
    """
    power = factors @ basis
    estimate = (basis * power).sum(-2)
    order = estimate.argsort(dim=-1, descending=True)
    index = order[:, None, :].expand_as(power)
    # Unit columns: QR's Q is invariant to positive column scaling, and columns of tiny eigen-directions would
    # otherwise sink into float32 subnormals, where LAPACK runs ~5x slower.
    power = power / power.norm(dim=-2, keepdim=True).clamp_min(_ABS_FLOOR)
    q = torch.linalg.qr(power.gather(-1, index)).Q
    new = torch.empty_like(q).scatter_(-1, index, q)
    finite = torch.isfinite(new).flatten(1).all(1)
    return torch.where(finite[:, None, None], new, basis), ~finite


def soap_block_step_before_(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    factors: Sequence[torch.Tensor | None],
    bases: Sequence[torch.Tensor | None],
    fallbacks: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    shampoo_beta: float,
    eps: float,
    correct_bias: bool,
    normalize_grads: bool,
    reference: bool,
    initialize: bool,
    refresh: bool,
    ok: torch.Tensor | None = None,
    compiled: bool = False,
) -> torch.Tensor | None:
    """Advance the state of ``B`` blocks in place and return the parameter increment ``[B, *shape]``.

    ``grads``/``exp_avg``/``exp_avg_sq`` are ``[B, *shape]`` float32 (moments in eigenbasis coordinates),
    ``step`` counts applied updates ``[B]``, ``factors``/``bases`` hold ``[B, d, d]`` per dim (``None`` =
    identity), ``fallbacks`` ``[B]`` counts basis computations that kept the previous basis.

    Order of operations (the reference's, §2.2 of ``soap_anchors.md``): the gradient is projected with the
    basis from *before* it is added to the factors; factors are updated with the raw gradient; a refresh (one
    power-iteration + QR step) follows the update and transports the momentum exactly into the new basis.
    ``initialize`` (a block's first gradient) seeds the factors and takes their ``eigh`` first.  With
    ``reference=True`` that first call applies no update (returns ``None``), epsilon is added to ``sqrt(v)``
    before bias correction and the caller applies weight decay after the step; otherwise the update is
    AdamW's formula in the eigenbasis.  ``ok`` (0-d bool) turns the whole call into a no-op on the state when
    false (non-finite gradient), without a host synchronisation.  ``compiled`` runs the elementwise Adam part
    through ``torch.compile`` (fused kernels; same math).
    """
    keep = None if ok is None else ok.to(grads.dtype)
    if ok is not None:
        grads = torch.where(ok, grads, 0.0)
    grams = [None if f is None else contract_all_but(grads, i) for i, f in enumerate(factors)]

    def accumulate() -> None:
        for factor, gram in zip(factors, grams, strict=True):
            if factor is not None and gram is not None:
                # the exception: ``dtype=factor.dtype`` (was the float32 default)
                factor.mul_(masked(shampoo_beta, keep, 1.0, factor.dtype)).add_(gram, alpha=1.0 - shampoo_beta)

    if initialize:
        accumulate()
        for factor, basis in zip(factors, bases, strict=True):
            if factor is not None and basis is not None:
                new, failed = eigh_robust(factor, basis)
                basis.copy_(new)
                fallbacks.add_(failed)
        if reference:
            return None

    g = project(grads, bases)
    step.add_(1.0 if keep is None else keep.to(step.dtype))
    bshape = (-1,) + (1,) * (grads.dim() - 1)
    if correct_bias:
        bc1 = bias_correction(beta1, step)
        bc2_sqrt = bias_correction(beta2, step).sqrt()
    else:
        bc1 = bc2_sqrt = torch.ones_like(step)
    scale = lr * bc2_sqrt / bc1 if reference else lr / bc1
    adam = compiled_adam_direction() if compiled else adam_direction_
    direction = adam(exp_avg, exp_avg_sq, g, keep, bc2_sqrt.view(bshape), beta1, beta2, eps, reference)
    update = project_back(direction, bases)
    if normalize_grads:
        rms = update.square().flatten(1).mean(1).sqrt().add_(1e-30)
        scale = scale / rms
    update.mul_(masked(-scale, keep, 0.0).view(bshape))

    if not initialize:
        accumulate()
    if refresh:
        rotations: list[torch.Tensor | None] = []
        for factor, basis in zip(factors, bases, strict=True):
            if factor is None or basis is None:
                rotations.append(None)
                continue
            new, failed = refresh_eigenbasis_before(factor, basis)
            rotations.append(new.mT @ basis)
            basis.copy_(new)
            fallbacks.add_(failed)
        exp_avg.copy_(project_back(exp_avg, rotations))
    return update
