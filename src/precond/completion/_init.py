"""Spectral initialization: randomized truncated SVD of the rescaled observed matrix (Jain–Netrapalli–Sanghavi 2013).

The observed matrix ``P_Ω(R)`` (zeros where unobserved) is rescaled by ``1/p`` with ``p = |Ω| / (m n)`` so that it
is an unbiased estimate of ``R`` under uniform sampling (JNS13 Alg. 2, step 2).  Its top-``k`` subspace is found by
the randomized range finder with ``q`` power iterations and ``k + oversample`` probe vectors (Halko–Martinsson–Tropp
2011, Alg. 4.4 and 5.1); the sparse products are sparse CSR times dense, ``O(|Ω| (k + oversample))`` time per
product.
"""

from __future__ import annotations

import warnings

import torch

from precond.completion._solve import RowIndex
from precond.linalg import segment_csr


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The sparse CSR ``X`` with entries ``vals`` at ``(rows, cols)`` (repeated entries summed)."""
    with warnings.catch_warnings():  # torch flags its CSR layout as beta once per process
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape).coalesce().to_sparse_csr()


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
    index: tuple[RowIndex, RowIndex] | None = None,
) -> torch.Tensor:
    """Column factor ``V₀ = V_k Σ_k^{1/2}`` ``[n, k]`` of the rank-``k`` randomized SVD ``U_k Σ_k V_kᵀ ≈ P_Ω(R)/p``.

    ``index``: the observations already grouped by row and by column (:class:`~._solve.RowIndex` of ``(rows, cols)``
    and of ``(cols, rows)``), which saves sorting them again."""
    m, n = shape
    vals = target * (m * n / target.numel())
    width = min(rank + oversample, m, n)
    probe = torch.randn(n, width, generator=generator, dtype=torch.float64).to(dtype=target.dtype, device=target.device)
    if index is None:
        X, Xt = _csr(rows, cols, vals, (m, n)), _csr(cols, rows, vals, (n, m))
    else:
        by_row, by_col = index
        X = segment_csr(*by_row.csr, vals.index_select(0, by_row.order), n)
        Xt = segment_csr(*by_col.csr, vals.index_select(0, by_col.order), m)
    q = torch.linalg.qr(X @ probe).Q
    for _ in range(power_iterations):
        z = torch.linalg.qr(Xt @ q).Q
        q = torch.linalg.qr(X @ z).Q
    b_t = Xt @ q  # (Qᵀ X)ᵀ, [n, width]
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
