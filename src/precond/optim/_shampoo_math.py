"""The math of one Shampoo step on a batch of same-shaped blocks (no optimizer bookkeeping).

Shampoo (Gupta, Koren, Singer 2018, arXiv 1802.09568, Alg. 1-2) with the practical changes of Distributed
Shampoo (Shi et al. 2023, arXiv 2309.06497): exponential moving averages of the Kronecker factors, roots
recomputed every ``precondition_frequency`` steps, momentum on the gradient ("filtered gradient", §3.1.2)
and *grafting* (§3.1.1, after Agarwal et al. 2020): each block's step takes Shampoo's direction and the
grafted method's norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from precond.linalg import accumulate_gram_, inverse_root, project
from precond.optim._adam import adam_direction_, bias_correction
from precond.optim._common import masked

GRAFTINGS = ("adam", "adagrad", "sgd", "none")
_TINY = 1e-30


def shampoo_block_step_(
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
            # the decay inside the GEMM (one pass over the factor); a skipped step keeps the old factor, selected
            accumulate_gram_(factor, grads, i, weight, beta=beta2, keep=ok)
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

    # One scaling pass: the step size and the graft ratio are folded into one factor per block.
    factor = masked(-lr / bc1, keep, 0.0)
    if precondition:
        direction = project(exp_avg, roots)
        if grafting != "none":
            factor = factor * (_block_norm(graft) / _block_norm(direction).clamp_min(_TINY))
    else:
        direction = graft
    if direction is exp_avg:  # state (sgd/none grafting, or no factored dim): do not scale it in place
        return direction * factor.view(bshape)
    return direction.mul_(factor.view(bshape))


def _block_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)
