"""Cost matrices between point clouds and uniform weights."""

from __future__ import annotations

from typing import Any

import torch

from precond.ot._validate import as_points

METRICS = ("sqeuclidean", "euclidean", "cityblock", "chebyshev", "minkowski")


def _points(x: Any, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    t = as_points(x, name)  # any NumPy strides (``x[::-1]``), lists or tensors
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"`{name}` must be [n, d] (or [n] for 1-D points), got shape {tuple(t.shape)}")
    if dtype is None:
        dtype = torch.float32 if t.dtype == torch.float32 else torch.float64
    t = t.to(dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"`{name}` contains NaN or inf entries")
    return t


def dist(
    x: Any, y: Any = None, metric: str = "sqeuclidean", p: float = 2.0, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Pairwise cost matrix ``C_ij = d(x_i, y_j)`` (POT's ``ot.dist`` metrics), as a torch tensor.

    Args:
        x: points ``[n, d]`` (or ``[n]``), NumPy or torch.
        y: points ``[m, d]``; default ``x``.
        metric: ``"sqeuclidean"`` (``‖x − y‖²``, the default), ``"euclidean"``, ``"cityblock"`` (L1),
            ``"chebyshev"`` (L∞) or ``"minkowski"`` (``‖x − y‖_p``).  Distances are computed from
            differences (no ``‖x‖² + ‖y‖² − 2xᵀy`` cancellation), so ``C_ii = 0`` exactly.
        p: the Minkowski exponent.
        dtype: default float64 (float32 if ``x`` is float32).
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    xt = _points(x, "x", dtype)
    yt = xt if y is None else _points(y, "y", xt.dtype).to(xt.device)
    if xt.shape[1] != yt.shape[1]:
        raise ValueError(f"`x` and `y` must have the same dimension, got {xt.shape[1]} and {yt.shape[1]}")
    norm = {"sqeuclidean": 2.0, "euclidean": 2.0, "cityblock": 1.0, "chebyshev": float("inf"), "minkowski": p}[metric]
    if not norm > 0:
        raise ValueError(f"`p` must be positive, got {p!r}")
    c = torch.cdist(xt[None], yt[None], p=norm, compute_mode="donot_use_mm_for_euclid_dist")[0]
    return c * c if metric == "sqeuclidean" else c


def unif(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform weights ``1/n`` (POT's ``ot.unif``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}")
    return torch.full((n,), 1.0 / n, dtype=dtype, device=device)
