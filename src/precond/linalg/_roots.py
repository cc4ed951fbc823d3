"""Inverse matrix roots of symmetric PSD factors (Shampoo's preconditioner)."""

from __future__ import annotations

import torch

from precond.linalg._eigen import eigh_robust

_TINY = 1e-30
#: :func:`_pow` pads its flat input to a multiple of this many elements (two 64-byte vectors of float16 and more).
_POW_PAD = 64


def _pow(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """``x ** exponent`` elementwise, with bits that do not depend on the batch size.

    ATen's CPU elementwise loop runs whole SIMD vectors, then the tail that does not fill two of them in scalar
    code, and the scalar ``pow`` rounds differently from the vectorized one (with AVX2's 8-float vectors a lone
    ``8 × 8`` factor's 8 eigenvalues are all tail, while the same member in a batch of two is vectorized).  Padding
    the flat input to a multiple of ``_POW_PAD`` elements sends every element through the vector path, so a
    member's root is the same alone or in any batch (the sharded optimizers' bitwise parity with one process
    relies on it).
    """
    flat = x.reshape(-1)
    pad = (-flat.numel()) % _POW_PAD
    if pad and x.device.type == "cpu":
        flat = torch.cat([flat, flat.new_ones(pad)])
    return flat.pow(exponent)[: x.numel()].view_as(x)


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
    scaled = vecs * _pow(values + damping, -exponent)[..., None, :]
    roots = scaled @ vecs.mT
    roots = 0.5 * (roots + roots.mT)
    good = torch.isfinite(roots).flatten(1).all(1) & ~failed
    return torch.where(good[:, None, None], roots, previous), ~good
