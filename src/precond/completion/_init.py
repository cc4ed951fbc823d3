"""Spectral initialization: randomized truncated SVD of the rescaled observed matrix (Jain–Netrapalli–Sanghavi 2013).

The observed matrix ``P_Ω(R)`` (zeros where unobserved) is rescaled by ``1/p`` with ``p = |Ω| / (m n)`` so that it
is an unbiased estimate of ``R`` under uniform sampling (JNS13 Alg. 2, step 2).  Its top-``k`` subspace is found by
the randomized range finder with ``q`` power iterations and ``k + oversample`` probe vectors (Halko–Martinsson–Tropp
2011, Alg. 4.4 and 5.1); the sparse products are segment sums over the observations, ``O(|Ω| (k + oversample))``
time and memory per product.
"""

from __future__ import annotations

import torch


def _matmul(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, x: torch.Tensor, m: int) -> torch.Tensor:
    """``X @ x`` for the sparse ``X`` with entries ``vals`` at ``(rows, cols)`` and ``m`` rows."""
    out = torch.zeros(m, x.shape[1], dtype=x.dtype, device=x.device)
    return out.index_add_(0, rows, vals[:, None] * x[cols])


def spectral_init(
    rows: torch.Tensor,
    cols: torch.Tensor,
    target: torch.Tensor,
    shape: tuple[int, int],
    rank: int,
    generator: torch.Generator,
    *,
    oversample: int = 10,
    power_iterations: int = 2,
) -> torch.Tensor:
    """Column factor ``V₀ = V_k Σ_k^{1/2}`` ``[n, k]`` of the rank-``k`` randomized SVD ``U_k Σ_k V_kᵀ ≈ P_Ω(R)/p``."""
    m, n = shape
    vals = target * (m * n / target.numel())
    width = min(rank + oversample, m, n)
    probe = torch.randn(n, width, generator=generator, dtype=torch.float64).to(dtype=target.dtype, device=target.device)
    q = torch.linalg.qr(_matmul(rows, cols, vals, probe, m)).Q
    for _ in range(power_iterations):
        z = torch.linalg.qr(_matmul(cols, rows, vals, q, n)).Q
        q = torch.linalg.qr(_matmul(rows, cols, vals, z, m)).Q
    b_t = _matmul(cols, rows, vals, q, n)  # (Qᵀ X)ᵀ, [n, width]
    _, s, vh = torch.linalg.svd(b_t.T, full_matrices=False)
    return vh[:rank].T * s[:rank].sqrt()


def trim_rows(factor: torch.Tensor, trim: float) -> torch.Tensor:
    """Incoherence trimming: rows with ``‖f_j‖ > trim · ‖F‖_F / √n`` (``trim`` times the RMS row norm) are rescaled
    to that norm; the other rows are unchanged.

    The row-wise form of the clipping of Jain–Netrapalli–Sanghavi 2013 (Alg. 2, step 4; reused by Gu–Song–Yin–Zhang
    2024), which zeroes the entries of the orthonormal initial factor above ``2 μ √k / √n``: for an orthonormal
    ``[n, k]`` factor the RMS row norm is ``√(k/n)`` and a ``μ``-incoherent one has row norms ``≤ √(μ k / n)``, so
    ``trim = 2 μ √k`` bounds the rows as the paper's entry clip does (its rows are ``≤ 2 μ k / √n``).
    """
    norms = factor.double().norm(dim=1)
    bound = trim * float(norms.square().mean().sqrt())
    scale = torch.where(norms > bound, bound / norms.clamp_min(torch.finfo(torch.float64).tiny), 1.0)
    return factor * scale.to(factor.dtype)[:, None]
