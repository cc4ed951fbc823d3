"""Warm start of the biases: the bias-only ridge model fitted by alternating closed-form updates.

Model ``r_ij ≈ μ + b_i + c_j`` with penalty ``Σ λ_i b_i² + Σ λ_j c_j²`` (Koren 2010, "Factor in the neighbors",
eq. 2, the "baseline predictors").  Each update is exact given the other side,
``b_i = Σ_{j∈Ω_i} (r_ij − μ − c_j) / (|Ω_i| + λ_i)`` (and the same for ``c_j``); the sweeps are block Gauss–Seidel
on this convex quadratic, so they converge.  Run before the spectral initialization so that the SVD sees the
interaction part ``r − μ − b_i − c_j`` and not the offsets.
"""

from __future__ import annotations

import torch


def fit_biases(
    rows: torch.Tensor,
    cols: torch.Tensor,
    centered: torch.Tensor,
    counts: tuple[torch.Tensor, torch.Tensor],
    lams: tuple[torch.Tensor, torch.Tensor],
    *,
    max_sweeps: int = 100,
    rtol: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column biases of the bias-only model (``centered = r − μ``); stops when a sweep changes the biases
    by at most ``rtol · ‖centered‖_∞`` or after ``max_sweeps``.  Empty rows/columns get 0."""
    (count_r, count_c), (lam_r, lam_c) = counts, lams
    m, n = count_r.numel(), count_c.numel()
    den_r = (count_r.to(centered.dtype) + lam_r).clamp_min(torch.finfo(centered.dtype).tiny)
    den_c = (count_c.to(centered.dtype) + lam_c).clamp_min(torch.finfo(centered.dtype).tiny)
    b = torch.zeros(m, dtype=centered.dtype, device=centered.device)
    c = torch.zeros(n, dtype=centered.dtype, device=centered.device)
    scale = float(centered.abs().max())
    for _ in range(max_sweeps):
        b_new = torch.zeros_like(b).index_add_(0, rows, centered - c[cols]) / den_r
        c_new = torch.zeros_like(c).index_add_(0, cols, centered - b_new[rows]) / den_c
        change = max(float((b_new - b).abs().max()), float((c_new - c).abs().max()))
        b, c = b_new, c_new
        if change <= rtol * scale:
            break
    return b, c
