"""Quintic Newton–Schulz orthogonalization: the approximate polar factor ``U Vᵀ`` that Muon steps along."""

from __future__ import annotations

import torch

#: Keller Jordan's coefficients: chosen to maximise the slope at zero (small singular values grow fast) at the
#: price of not converging to exactly 1.
MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    x: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
) -> torch.Tensor:
    r"""Approximate orthogonalization ``U Vᵀ`` of each matrix ``X = U S Vᵀ`` of a batch ``[..., m, n]``.

    Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"
    (https://kellerjordan.github.io/posts/muon/).  Each matrix is divided by its Frobenius norm (``+ eps``, so
    every singular value is in ``[0, 1]`` and a zero matrix stays zero), then ``steps`` quintic iterations

    .. math:: X \leftarrow aX + (bA + cA^2)X, \qquad A = X X^\top

    are applied.  On the singular values this is the odd polynomial ``σ ← aσ + bσ³ + cσ⁵``, so the singular
    vectors are kept exactly and only ``S`` changes.  With the default coefficients (slope 3.4445 at zero)
    the result is **not** ``U Vᵀ`` exactly: every singular value with ``σ ≥ 2e-3·‖X‖_F`` ends in the band
    ``[0.68, 1.21]`` after 5 steps (the range of the scalar map on ``[2e-3, 1]``, also measured on matrices in
    ``tests/linalg/test_newton_schulz.py``), which Jordan et al. found does not hurt Muon.  Smaller ones are
    only multiplied by about ``a⁵ ≈ 485`` and stay below the band: a ``128×128`` input with log-spaced
    singular values and condition number 1e3 gets a smallest output singular value of ~0.15.  More ``steps``
    widen the range that reaches the band.

    When ``m > n`` the iteration runs on the transpose so that the Gram matrix ``A`` is the smaller
    ``min(m, n)²`` side; the result has the input's shape.  It runs in the input's dtype: pass float32 (or
    float64); Muon in bf16 is what the reference does on GPUs, but CPUs without bf16 matmul units are far
    slower in it.

    Args:
        x: ``[..., m, n]`` with any number of leading batch dims (each matrix handled on its own).
        steps: number of iterations (``>= 0``; ``0`` returns the normalised input).
        coefficients: ``(a, b, c)`` of the quintic polynomial.
        eps: added to the Frobenius norm before dividing.
    """
    if x.ndim < 2:
        raise ValueError(f"newton_schulz: x must have at least 2 dims [..., m, n], got shape {tuple(x.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"newton_schulz: invalid steps={steps!r}: must be an integer >= 0")
    if len(coefficients) != 3:
        raise ValueError(f"newton_schulz: invalid coefficients={coefficients!r}: must be three numbers (a, b, c)")
    a, b, c = (float(v) for v in coefficients)
    transpose = x.shape[-2] > x.shape[-1]
    if transpose:
        x = x.mT
    norm = torch.linalg.matrix_norm(x, ord="fro", keepdim=True)
    out = x / (norm + eps)
    for _ in range(steps):
        gram = out @ out.mT
        poly = (gram @ gram).mul_(c).add_(gram, alpha=b)
        out = (poly @ out).add_(out, alpha=a)
    return out.mT if transpose else out
