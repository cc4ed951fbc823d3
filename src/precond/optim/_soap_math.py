"""The math of one SOAP step on a batch of same-shaped blocks (no optimizer bookkeeping).

SOAP (Vyas et al. 2024, arXiv 2409.11321, Algorithm 3): run Adam in the eigenbasis of Shampoo's Kronecker
factors ``L = EMA(G Gᵀ)``, ``R = EMA(Gᵀ G)``, refreshing the basis every ``precondition_frequency`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from precond.linalg import accumulate_gram_, change_basis, eigenbasis_refresh, eigh_robust, project, project_back
from precond.optim._adam import adam_direction_, bias_correction, compiled_adam_direction, fused_adam_step_
from precond.optim._common import masked


def soap_block_step_(
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
    cholesky_qr: bool = False,
    drift_tolerance: float = 0.0,
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
    through ``torch.compile`` (fused kernels; same math).  ``cholesky_qr`` and ``drift_tolerance`` are the
    opt-in refresh variants of :func:`precond.linalg.eigenbasis_refresh`.

    Work per 2-D block ``m×n`` (issue 18): the factor EMAs are fused ``baddbmm`` calls (no Gram matrix
    allocated), the refresh's QR forms no ``R``, and the momentum is transported per side by the cheaper exact
    route (:func:`precond.linalg.change_basis`): for a ``[10, 2048]`` head that avoids a ``2048³`` rotation.
    With float32 state on the CPU, Adam's moments and step are one fused kernel pass
    (:func:`precond.optim._adam.fused_adam_step_`); bases are best stored column-major (SOAP's buffers are), the
    layout in which the refresh needs no transposing copy.
    """
    keep = None if ok is None else ok.to(grads.dtype)
    if ok is not None:
        grads = torch.where(ok, grads, 0.0)

    def accumulate() -> None:
        for i, factor in enumerate(factors):
            if factor is not None:  # a skipped step (``ok`` false) keeps the old factor, selected
                accumulate_gram_(factor, grads, i, 1.0 - shampoo_beta, beta=shampoo_beta, keep=ok)

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
    if (
        correct_bias
        and not (compiled or reference or normalize_grads)
        and g.device.type == "cpu"
        and g.dtype == torch.float32
    ):
        direction = fused_adam_step_(
            exp_avg, exp_avg_sq, g, step, lr, beta1, beta2, eps, skip=None if ok is None else ~ok
        )
        update = project_back(direction, bases)
    else:
        update = _unfused_update(
            exp_avg,
            exp_avg_sq,
            g,
            step,
            bases,
            keep,
            lr,
            beta1,
            beta2,
            eps,
            correct_bias,
            normalize_grads,
            reference,
            compiled,
        )
    if not initialize:
        accumulate()
    if refresh:
        _refresh_(exp_avg, factors, bases, fallbacks, cholesky_qr, drift_tolerance)
    return update


def _unfused_update(
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    g: torch.Tensor,
    step: torch.Tensor,
    bases: Sequence[torch.Tensor | None],
    keep: torch.Tensor | None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    correct_bias: bool,
    normalize_grads: bool,
    reference: bool,
    compiled: bool,
) -> torch.Tensor:
    """The update by separate elementwise passes: the reference's rounding, ``normalize_grads``, no bias
    correction, ``compiled``, float64 state (the fused kernel forms its constants in float32) and accelerators;
    the fused CPU kernel covers the default case."""
    bshape = (-1,) + (1,) * (g.dim() - 1)
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
    return update.mul_(masked(-scale, keep, 0.0).view(bshape))


def _refresh_(
    exp_avg: torch.Tensor,
    factors: Sequence[torch.Tensor | None],
    bases: Sequence[torch.Tensor | None],
    fallbacks: torch.Tensor,
    cholesky_qr: bool,
    drift_tolerance: float,
) -> None:
    """One power-iteration + QR refresh of every factored dim, with the momentum transported into the new bases."""
    bshape = (-1,) + (1,) * (exp_avg.dim() - 1)
    news: list[torch.Tensor | None] = []
    changed: torch.Tensor | None = None  # members with at least one recomputed basis (None: all)
    for factor, basis in zip(factors, bases, strict=True):
        if factor is None or basis is None:
            news.append(None)
            continue
        out = eigenbasis_refresh(factor, basis, cholesky_qr=cholesky_qr, drift_tolerance=drift_tolerance)
        fallbacks.add_(out.failed)
        if out.refreshed is not None:
            changed = out.refreshed if changed is None else changed | out.refreshed
            if not bool(out.refreshed.any()):  # host sync (the refresh already synced): nothing moved
                news.append(None)
                continue
        news.append(out.basis)
    moved = change_basis(exp_avg, bases, news)
    if moved is not exp_avg:
        if changed is not None and not bool(changed.all()):
            moved = torch.where(changed.view(bshape), moved, exp_avg)  # untouched members stay bitwise
        exp_avg.copy_(moved)
    for basis, fresh in zip(bases, news, strict=True):
        if basis is not None and fresh is not None:
            basis.copy_(fresh)
