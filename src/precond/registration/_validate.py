"""Input checking for ``precond.registration``: every error names the argument and says what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_real(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float (not a ``bool``), ``≥ minimum`` (``> minimum`` with ``strict``)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"`{name}` must be finite, got {out!r}")
    if minimum is not None and (out <= minimum if strict else out < minimum):
        raise ValueError(f"`{name}` must be {'>' if strict else '≥'} {minimum}, got {out!r}")
    return out


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int (Python or NumPy integer, not a ``bool``) ``≥ minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {int(value)!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` (array-like, NumPy or torch) as a float64 NumPy array; TypeError for non-numeric input."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a numeric array, got {type(x).__name__}: {err}") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"`{name}` must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"`{name}` must be real, got complex dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def check_points(x: Any, name: str, *, minimum: int = 1) -> np.ndarray:
    """``x`` as a finite float64 ``[N, 3]`` array with ``N ≥ minimum``."""
    arr = as_float_array(x, name)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"`{name}` must be an [N, 3] array of points (one row per point), got shape {arr.shape}")
    if arr.shape[0] < minimum:
        raise ValueError(f"`{name}` needs at least {minimum} points, got {arr.shape[0]}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(
            f"`{name}` has {int(bad.sum())} row(s) with NaN or inf (first at row {int(np.argmax(bad))}); "
            "drop invalid returns before registering"
        )
    return arr


def check_hessian(h: Any, name: str = "H", *, rtol: float = 1e-8) -> np.ndarray:
    """``h`` as a finite, symmetric float64 ``[6, 6]`` array (returned symmetrized: ``(H + Hᵀ)/2``)."""
    arr = as_float_array(h, name)
    if arr.shape != (6, 6):
        raise ValueError(f"`{name}` must be the 6×6 Gauss–Newton Hessian in [rot; trans] order, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` has NaN or inf entries")
    asym = float(np.max(np.abs(arr - arr.T)))
    scale = float(np.max(np.abs(arr)))
    if asym > rtol * max(scale, 1e-300):
        raise ValueError(
            f"`{name}` must be symmetric (JᵀJ): max |H − Hᵀ| = {asym:.3g} relative to max |H| = {scale:.3g}; "
            "pass (H + H.T) / 2 if the asymmetry is rounding"
        )
    return 0.5 * (arr + arr.T)


def check_vector6(b: Any, name: str = "b") -> np.ndarray:
    """``b`` as a finite float64 ``[6]`` vector."""
    arr = as_float_array(b, name)
    if arr.shape != (6,):
        raise ValueError(f"`{name}` must be a vector of 6 entries ([rot; trans] order), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` has NaN or inf entries")
    return arr


def check_transform(t: Any, name: str = "init", *, atol: float = 1e-6) -> np.ndarray:
    """``t`` as a rigid ``[4, 4]`` transform: rotation block orthonormal with det +1, last row ``[0, 0, 0, 1]``."""
    arr = as_float_array(t, name)
    if arr.shape != (4, 4):
        raise ValueError(f"`{name}` must be a 4×4 homogeneous rigid transform, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` has NaN or inf entries")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=atol, rtol=0.0):
        raise ValueError(f"`{name}` must have last row [0, 0, 0, 1], got {arr[3].tolist()}")
    r = arr[:3, :3]
    ortho = float(np.max(np.abs(r.T @ r - np.eye(3))))
    if ortho > atol:
        raise ValueError(
            f"`{name}` is not rigid: its rotation block has max |RᵀR − I| = {ortho:.3g} (> {atol:g}); "
            "scale or shear is not allowed"
        )
    if np.linalg.det(r) < 0:
        raise ValueError(f"`{name}` is a reflection (det R = −1), not a rotation")
    return arr
