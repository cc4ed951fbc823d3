"""Adam (Kingma & Ba 2015, arXiv 1412.6980, Algorithm 1), the one copy every optimizer here shares.

SOAP runs it in the eigenbasis, Shampoo grafts its step norm, Muon uses it (as ``torch.optim.AdamW``) for the
non-matrix parameters.  The moments and the denominator work on lists of tensors (``torch._foreach_*``); a
batched ``[B, ...]`` block is a one-element list.  ``keep`` (0-d, false on a skipped non-finite step) masks
every update without a host sync (:func:`precond.optim._common.masked`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from precond.optim._common import masked


def bias_correction(beta: float, step: torch.Tensor) -> torch.Tensor:
    """``1 − βᵗ`` elementwise for ``t = max(step, 1)`` (Algorithm 1's bias corrections), in ``step``'s dtype.

    The clamp keeps a skipped first step (``step = 0``) away from ``1/0``; such a step is masked anyway.
    """
    return 1.0 - beta ** step.clamp(min=1.0)


def adam_moments_(
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    grads: list[torch.Tensor],
    keep: torch.Tensor | None,
    beta1: float,
    beta2: float,
    *,
    lerp: bool = False,
    dtype: torch.dtype = torch.float32,
) -> None:
    """``m ← β1·m + (1 − β1)·g`` and ``v ← β2·v + (1 − β2)·g²`` in place (untouched where ``keep`` is false).

    ``lerp=True`` forms ``m`` as ``torch.optim.AdamW`` does (``m.lerp_(g, 1 − β1)``, so Muon's AdamW part is
    bitwise torch's); ``False`` as ``β1·m + (1 − β1)·g`` (the SOAP reference's rounding).  ``dtype`` is the
    state dtype (the masked constants are built in it).  ``grads`` must be finite on a skipped step too:
    callers zero them there (``0·inf = NaN``).
    """
    if lerp:
        weight = masked(1.0 - beta1, keep, 0.0, dtype)
        if isinstance(weight, torch.Tensor):
            torch._foreach_lerp_(exp_avgs, grads, [weight] * len(grads))
        else:
            torch._foreach_lerp_(exp_avgs, grads, weight)
    else:
        torch._foreach_mul_(exp_avgs, masked(beta1, keep, 1.0, dtype))
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, masked(beta2, keep, 1.0, dtype))
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)


def adam_denominators(
    exp_avg_sqs: list[torch.Tensor], bc2_sqrt: list[torch.Tensor] | None, eps: float
) -> list[torch.Tensor]:
    """``sqrt(v)/sqrt(1 − β2ᵗ) + eps`` per tensor (``bc2_sqrt=None``: ``sqrt(v) + eps``, bias correction left
    to the step size, as the SOAP reference does)."""
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if bc2_sqrt is not None:
        torch._foreach_div_(denom, bc2_sqrt)
    torch._foreach_add_(denom, eps)
    return list(denom)


def adam_direction_(
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    g: torch.Tensor,
    keep: torch.Tensor | None,
    bc2_sqrt: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    reference: bool,
) -> torch.Tensor:
    """Adam's moment updates (in place) and its direction ``m / (sqrt(v)/sqrt(bc2) + eps)`` for a batched block.

    ``reference=True`` uses the reference's ``m / (sqrt(v) + eps)`` (its bias correction is in the step size).
    """
    adam_moments_([exp_avg], [exp_avg_sq], [g], keep, beta1, beta2)
    (denom,) = adam_denominators([exp_avg_sq], None if reference else [bc2_sqrt], eps)
    return exp_avg / denom


def fused_adam_step_(
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    g: torch.Tensor,
    step: torch.Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    skip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adam's moment updates (in place) and its step ``−lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)`` for a batched
    ``[B, ...]`` block (``step`` ``[B]``: the bias corrections' ``t`` per member, already advanced), in one pass.

    The same math as :func:`adam_direction_` times ``−lr/bc1`` (up to float rounding: the bias corrections are
    formed in double inside the kernel): ATen's fused CPU Adam (``torch._fused_adam_``, what
    ``torch.optim.Adam(fused=True)`` runs) applied to a zero "parameter" per member, which it turns into the
    step.  One read of ``g, m, v`` and one write of ``m, v`` and the step, instead of the eight elementwise
    passes of the unfused form.  For float32 state on the CPU only (the kernel rounds some of its constants to
    float32, which float64 state would notice): callers use :func:`adam_direction_` elsewhere.

    ``skip`` (0-d bool, optional): when true the moments stay bitwise unchanged and the step is zero (the
    kernel's own ``found_inf``), so a kept masked step is bitwise the unmasked one.
    """
    out = torch.zeros_like(g)
    torch._fused_adam_(
        list(out.unbind(0)),
        list(g.unbind(0)),
        list(exp_avg.unbind(0)),
        list(exp_avg_sq.unbind(0)),
        [],
        list(step.to(torch.float32).unbind(0)),  # the kernel reads float32 step counts
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=eps,
        amsgrad=False,
        maximize=False,
        found_inf=None if skip is None else skip.to(torch.float32),
    )
    return out


@functools.cache
def compiled_adam_direction() -> Callable[..., torch.Tensor]:
    return torch.compile(adam_direction_, fullgraph=True)
