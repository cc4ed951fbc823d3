"""Inverse matrix roots of symmetric PSD factors (Shampoo's preconditioner)."""

from __future__ import annotations

import torch

from precond.linalg._eigen import eigh_robust

_TINY = 1e-30


def inverse_root(
    factors: torch.Tensor,
    exponent: float,
    eps: float,
    previous: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(A + eps·λ_max(A)·I)^(−exponent)`` for a batch ``[B, d, d]`` of symmetric PSD matrices.

    Shampoo (Gupta, Koren, Singer 2018, arXiv 1802.09568, Alg. 1) preconditions with ``L^{-1/4} G R^{-1/4}``;
    the damping is *relative* to each matrix's largest eigenvalue, so it does not depend on the gradient scale
    (the absolute ``ε·I`` of the paper must be retuned whenever the loss is rescaled).  Eigenvalues come from
    :func:`eigh_robust` (jitter → float64 retry); negative round-off eigenvalues are clamped to zero.  A member
    whose decomposition fails or whose root is non-finite keeps ``previous``; returns ``(roots, failed)``.
    """
    d = factors.shape[-1]
    eye = torch.eye(d, dtype=factors.dtype, device=factors.device).expand_as(factors)
    vecs, failed = eigh_robust(factors, eye)
    values = (vecs * (factors @ vecs)).sum(-2).clamp_min(0.0)  # Rayleigh quotients = eigenvalues
    damping = eps * values.amax(-1, keepdim=True) + _TINY
    scaled = vecs * (values + damping).pow(-exponent)[..., None, :]
    roots = scaled @ vecs.mT
    roots = 0.5 * (roots + roots.mT)
    good = torch.isfinite(roots).flatten(1).all(1) & ~failed
    return torch.where(good[:, None, None], roots, previous), ~good
