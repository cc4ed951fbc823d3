"""Input checking and conversion for ``precond.ot``: NumPy or torch in, torch tensors of one dtype/device out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: Relative tolerance on ``|Σa − Σb| / max(Σa, Σb)`` for balanced OT.
MASS_RTOL = 1e-6


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a NumPy array or torch tensor, got {type(x).__name__}") from err


def infer_dtype(m: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """float64 unless asked otherwise or the cost matrix already is float32."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float32 if m.dtype == torch.float32 else torch.float64


def check_problem(
    a: Any, b: Any, M: Any, reg: float, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Validate and convert ``(a, b, M, reg)``; empty or ``None`` weights become uniform.

    Raises:
        ValueError: naming the offending argument (shape, sign, finiteness, mass balance, ``reg``).
    """
    if M is None:
        raise ValueError("`M` (cost matrix) is required")
    m_t = _as_tensor(M, "M")
    if m_t.ndim != 2:
        raise ValueError(f"`M` must be a 2-D cost matrix, got shape {tuple(m_t.shape)}")
    if m_t.shape[0] == 0 or m_t.shape[1] == 0:
        raise ValueError(f"`M` must be non-empty, got shape {tuple(m_t.shape)}")
    if not (m_t.is_floating_point() or m_t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8)):
        raise ValueError(f"`M` must hold real numbers, got dtype {m_t.dtype}")
    dt = infer_dtype(m_t, dtype)
    device = m_t.device
    m_t = m_t.to(dtype=dt)
    # A finite sum proves every entry finite (NaN and ±inf propagate) without an [n, m] mask; only a sum that
    # overflowed needs the entrywise check.
    if not math.isfinite(float(m_t.sum())) and not bool(torch.isfinite(m_t).all()):
        raise ValueError("`M` contains NaN or inf entries")
    n, m = m_t.shape
    weights = []
    for name, w, size in (("a", a, n), ("b", b, m)):
        if w is None or (not isinstance(w, torch.Tensor) and np.size(w) == 0):
            weights.append(torch.full((size,), 1.0 / size, dtype=dt, device=device))
            continue
        w_t = _as_tensor(w, name).to(dtype=dt, device=device)
        if w_t.ndim == 2 and w_t.shape[1] == 1:
            w_t = w_t[:, 0]
        if w_t.ndim != 1 or w_t.shape[0] != size:
            side = "rows" if name == "a" else "columns"
            raise ValueError(f"`{name}` must have shape ({size},) to match the {side} of `M`, got {tuple(w_t.shape)}")
        if not bool(torch.isfinite(w_t).all()):
            raise ValueError(f"`{name}` contains NaN or inf entries")
        if bool((w_t < 0).any()):
            raise ValueError(f"`{name}` has negative weights")
        if float(w_t.sum()) <= 0:
            raise ValueError(f"`{name}` must have positive total mass")
        weights.append(w_t)
    a_t, b_t = weights
    sa, sb = float(a_t.sum()), float(b_t.sum())
    if abs(sa - sb) > MASS_RTOL * max(sa, sb):
        raise ValueError(f"`a` and `b` must have the same total mass (balanced OT), got sum(a)={sa!r}, sum(b)={sb!r}")
    if isinstance(reg, bool) or not isinstance(reg, (int, float)):
        try:
            reg = float(reg)
        except (TypeError, ValueError) as err:
            raise ValueError(f"`reg` must be a positive real number, got {reg!r}") from err
    reg = float(reg)
    if not math.isfinite(reg) or reg <= 0:
        raise ValueError(f"`reg` must be a positive finite number, got {reg!r}")
    return a_t, b_t, m_t, reg


def check_positive(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}")


def check_count(value: int, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {value!r}")
