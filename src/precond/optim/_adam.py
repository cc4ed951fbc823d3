"""Adam's elementwise direction, shared by SOAP (in the eigenbasis) and Shampoo (its Adam grafting)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from precond.optim._common import masked_decay


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
    """Adam's moment updates (in place) and its direction ``m / (sqrt(v)/sqrt(bc2) + eps)``.

    ``reference=True`` uses the reference's ``m / (sqrt(v) + eps)`` (its bias correction is in the step size).
    """
    exp_avg.mul_(masked_decay(beta1, keep)).add_(g, alpha=1.0 - beta1)
    exp_avg_sq.mul_(masked_decay(beta2, keep)).addcmul_(g, g, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt()
    if not reference:
        denom = denom.div_(bc2_sqrt)
    return exp_avg / denom.add_(eps)


@functools.cache
def compiled_adam_direction() -> Callable[..., torch.Tensor]:
    return torch.compile(adam_direction_, fullgraph=True)
