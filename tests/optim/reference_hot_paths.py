"""The Lion and Shampoo step functions as they were before issue 17's hot-path changes (precond at 7e5dfed),
kept verbatim as the "same math" oracle of ``test_hot_paths.py``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from precond.linalg import contract_all_but, inverse_root, project
from precond.optim._adam import adam_direction_, bias_correction
from precond.optim._common import masked

_TINY = 1e-30


def lion_step_before_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    ok: torch.Tensor | None = None,
) -> None:
    """One Lion step over lists of tensors, in place on ``params`` and ``exp_avgs``.

    ``exp_avgs`` share one floating dtype (the state dtype, float32 for bf16/fp16 parameters); the gradient is
    cast to it, the update is computed in it and the parameter is rounded once.  ``sign(0) = 0``: a coordinate
    whose interpolation ``β1·m + (1 − β1)·g`` is exactly zero (e.g. a parameter that has never had a non-zero
    gradient) is not moved, apart from weight decay.

    ``ok`` (0-d bool, from :func:`precond.optim._common.nonfinite_flag`) turns the call into a no-op when false,
    without a host sync: the gradient is replaced by ``-0.0`` (the exact additive identity), the momentum decay
    becomes 1 and the step size and weight decay 0.  Parameters and momenta are then bitwise unchanged (an
    exactly-zero parameter entry may flip the sign of its zero).
    """
    if not params:
        return
    dtype = exp_avgs[0].dtype
    g = [x.to(dtype) for x in grads]  # no copy when the gradient already has the state dtype
    if ok is not None:
        g = [torch.where(ok, x, -0.0) for x in g]
    # u = sign(β1·m + (1 − β1)·g)
    u = torch._foreach_mul(exp_avgs, beta1)
    torch._foreach_add_(u, g, alpha=1.0 - beta1)
    torch._foreach_sign_(u)
    # p ← p·(1 − lr·λ) − lr·u, in the state dtype, rounded once into the parameter
    work = [p if p.dtype == dtype else p.to(dtype) for p in params]
    if weight_decay != 0:
        torch._foreach_mul_(work, masked(1.0 - lr * weight_decay, ok, 1.0, dtype))
    torch._foreach_mul_(u, masked(-lr, ok, 0.0, dtype))
    torch._foreach_add_(work, u)
    for p, w in zip(params, work, strict=True):
        if w is not p:
            p.copy_(w)
    # m ← β2·m + (1 − β2)·g
    torch._foreach_mul_(exp_avgs, masked(beta2, ok, 1.0, dtype))
    torch._foreach_add_(exp_avgs, g, alpha=1.0 - beta2)


def shampoo_block_step_before_(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    graft_sq: torch.Tensor | None,
    step: torch.Tensor,
    factors: Sequence[torch.Tensor | None],
    roots: Sequence[torch.Tensor | None],
    fallbacks: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    exponent: float,
    grafting: str,
    grafting_beta2: float,
    grafting_eps: float,
    precondition: bool,
    refresh: bool,
    ok: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advance the state of ``B`` blocks in place and return the parameter increment ``[B, *shape]``.

    ``grads``/``exp_avg``/``graft_sq`` are ``[B, *shape]`` float32 (``graft_sq`` is ``None`` for SGD or no
    grafting), ``step`` ``[B]`` counts applied updates, ``factors``/``roots`` hold ``[B, d, d]`` per dim
    (``None`` = identity), ``fallbacks`` ``[B]`` counts root computations that kept the previous root.

    One step, per block, with ``t`` the step count and ``G`` the gradient:

    1. factors ``F_i ← β2·F_i + (1−β2)·G_(i) G_(i)ᵀ`` (``β2 = 1``: AdaGrad's running sum ``F_i += ...``);
    2. if ``refresh``: ``R_i ← (F_i/(1−β2ᵗ) + eps·λ_max·I)^(−exponent)`` (:func:`precond.linalg.inverse_root`);
    3. filtered gradient ``M ← β1·M + (1−β1)·G``, bias-corrected ``M̂ = M/(1−β1ᵗ)``;
    4. grafted direction ``D``: Adam ``M̂/(sqrt(v/(1−β2gᵗ)) + eps_g)`` with ``v ← β2g·v + (1−β2g)·G²``;
       AdaGrad ``M̂/(sqrt(v) + eps_g)`` with ``v += G²``; SGD and none ``M̂``;
    5. if ``precondition``: ``P = R_0 ×_0 R_1 ×_1 … M̂`` (2-D: ``R_L M̂ R_R``), rescaled to ``‖D‖_F`` unless
       ``grafting="none"``; otherwise (before ``start_preconditioning_step``) ``P = D``;
    6. return ``−lr·P``.

    ``ok`` (0-d bool) turns the call into a bitwise no-op on the state when false, without a host sync; the
    caller must not pass it on ``refresh`` steps (it resolves the flag on the host there).
    """
    keep = None if ok is None else ok.to(grads.dtype)
    if ok is not None:
        grads = torch.where(ok, grads, 0.0)
    step.add_(1.0 if keep is None else keep.to(step.dtype))
    bshape = (-1,) + (1,) * (grads.dim() - 1)

    weight = 1.0 if beta2 == 1.0 else 1.0 - beta2
    for i, factor in enumerate(factors):
        if factor is not None:
            factor.mul_(masked(beta2, keep, 1.0)).add_(contract_all_but(grads, i), alpha=weight)
    if refresh:
        bc2 = torch.ones_like(step) if beta2 == 1.0 else bias_correction(beta2, step)
        for factor, root in zip(factors, roots, strict=True):
            if factor is not None and root is not None:
                new, failed = inverse_root(factor / bc2.view(-1, 1, 1), exponent, eps, root)
                root.copy_(new)
                fallbacks.add_(failed)

    bc1 = bias_correction(beta1, step)
    if grafting == "adam":
        assert graft_sq is not None
        bc2g_sqrt = bias_correction(grafting_beta2, step).sqrt().view(bshape)
        graft = adam_direction_(exp_avg, graft_sq, grads, keep, bc2g_sqrt, beta1, grafting_beta2, grafting_eps, False)
    else:
        exp_avg.mul_(masked(beta1, keep, 1.0)).add_(grads, alpha=1.0 - beta1)
        if grafting == "adagrad":
            assert graft_sq is not None
            graft_sq.addcmul_(grads, grads)
            graft = exp_avg / graft_sq.sqrt().add_(grafting_eps)
        else:
            graft = exp_avg

    if precondition:
        direction = project(exp_avg, roots)
        if grafting != "none":
            ratio = _block_norm_before(graft) / _block_norm_before(direction).clamp_min(_TINY)
            direction = direction * ratio.view(bshape)
    else:
        direction = graft
    return direction * masked(-lr / bc1, keep, 0.0).view(bshape)


def _block_norm_before(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)
