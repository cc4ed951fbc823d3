"""The orthonormal DCT-II basis and its FFT evaluation (Makhoul 1980), for DCT column selection in low-rank
optimizers (Modoranu et al. 2025, arXiv 2505.17967, §3 "Dynamic Column Selection")."""

from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=64)
def _dct_basis_cached(size: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    k = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * n[:, None] + 1) * k[None, :] / (2 * size)) * math.sqrt(2.0 / size)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.to(dtype=dtype, device=device)


def dct_basis(size: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    r"""The ``size × size`` orthogonal matrix ``Q`` whose column ``k`` is the ``k``-th DCT-II basis vector:

    .. math:: Q_{nk} = c_k \sqrt{2/s}\,\cos\big(\pi k (2n + 1) / (2s)\big), \quad c_0 = 1/\sqrt 2,\ c_{k>0} = 1,

    so ``X Q`` is the orthonormal DCT-II of every row of ``X`` (the authors' ``dct3_matrix``: ``Q`` is the
    DCT-III operator).  Built in float64 and cached per ``(size, dtype, device)`` — one matrix per size, not the
    reference's single matrix for every layer.  The cached tensor is shared: do not modify it in place.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"dct_basis: invalid size={size!r}: must be an integer >= 1")
    return _dct_basis_cached(size, dtype, str(torch.device(device)))


def dct_rows(x: torch.Tensor) -> torch.Tensor:
    r"""``x @ dct_basis(n)`` (orthonormal DCT-II along the last dim, length ``n``) by one FFT: Makhoul's
    reordering (J. Makhoul 1980, "A fast cosine transform in one and two dimensions", IEEE TASSP 28(1), eq. 20)

    .. math:: v = (x_0, x_2, x_4, \dots, x_5, x_3, x_1), \qquad
              X_k = \mathrm{Re}\big(e^{-i\pi k/(2n)}\,\mathrm{FFT}(v)_k\big),

    then the orthonormal scaling ``sqrt(2/n)`` (``k = 0``: ``sqrt(1/n)``).  ``O(n log n)`` per row instead of
    ``O(n²)``; equal to the matrix product up to rounding.  Float32/float64 inputs.
    """
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"dct_rows: x must have a non-empty last dim, got shape {tuple(x.shape)}")
    n = x.shape[-1]
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    spectrum = torch.fft.fft(v, dim=-1)
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    angle = -math.pi * k / (2 * n)
    out = spectrum.real * torch.cos(angle) - spectrum.imag * torch.sin(angle)
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=x.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return out * scale
