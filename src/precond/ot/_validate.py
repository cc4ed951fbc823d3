"""Input checking and conversion for ``precond.ot``: NumPy or torch in, torch tensors of one dtype/device out."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

#: Relative tolerance on ``|Σa − Σb| / max(Σa, Σb)`` for balanced OT; the solvers remove a mismatch within it
#: by rescaling ``b`` to ``a``'s mass (:func:`balance`).
MASS_RTOL = 1e-6

#: Default ``tol`` of the solvers, relative to the total mass ``Σa``, per dtype: float32's rounding floor of the
#: L1 marginal error is a few ``eps ≈ 1.2e-7`` (measured 1e-7 to 5e-7 at n = 200), so ``1e-9`` is unreachable there.
DEFAULT_RTOL = {torch.float64: 1e-9, torch.float32: 1e-5}


def default_tol(dtype: torch.dtype, mass: float) -> float:
    """The solvers' ``tol=None``: ``DEFAULT_RTOL[dtype] · Σa``."""
    return DEFAULT_RTOL[dtype] * mass


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be array-like (NumPy array, torch tensor or nested lists): {err}") from err
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"`{name}` must hold real numbers, got {type(x).__name__} of dtype {arr.dtype}")
    if any(stride < 0 for stride in arr.strides):  # torch cannot view negative strides (e.g. ``M[::-1]``)
        arr = np.ascontiguousarray(arr)
    return torch.as_tensor(arr)


def as_points(x: Any, name: str) -> torch.Tensor:
    """``x`` as a torch tensor (any NumPy strides, lists, tensors), for :func:`precond.ot.dist`."""
    return _as_tensor(x, name)


def infer_dtype(m: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """float64 unless asked otherwise or the cost matrix already is float32."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float32 if m.dtype == torch.float32 else torch.float64


def _check_costs(m: torch.Tensor) -> bool:
    """Reject NaN and ``−inf`` in ``M``; return whether it has ``+inf`` entries (forbidden pairs)."""
    # A finite sum proves every entry finite (NaN and ±inf propagate) without an [n, m] mask; only a sum that is
    # not finite needs the entrywise checks.
    if math.isfinite(float(m.sum())):
        return False
    if bool(torch.isnan(m).any()):
        raise ValueError("`M` contains NaN entries")
    if bool((m == -math.inf).any()):
        raise ValueError("`M` contains -inf entries (costs must be real or +inf for forbidden pairs)")
    return bool(torch.isinf(m).any())


def _check_support(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> None:
    """Every point with mass needs a finite cost to some point with mass on the other side, or no plan exists."""
    allowed = torch.isfinite(m) & (a > 0)[:, None] & (b > 0)[None, :]
    for name, w, reach, side in (("a", a, allowed.any(1), "row"), ("b", b, allowed.any(0), "column")):
        bad = torch.nonzero((w > 0) & ~reach).flatten()
        if bad.numel():
            other = "b" if name == "a" else "a"
            raise ValueError(
                f"infeasible problem: {side} {int(bad[0])} of `M` (and {bad.numel() - 1} more) has `{name}` > 0 but "
                f"cost +inf to every point with `{other}` > 0; give it a finite cost or zero mass"
            )


def _scalar(value: Any) -> Any:
    """A 0-d NumPy array or torch tensor as its Python scalar; anything else unchanged."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        return value.item()
    return value


def check_real(value: Any, name: str) -> float:
    """``value`` as a float if it is a real number (Python or NumPy scalar, 0-d array or tensor; not a ``bool`` or
    ``str``), else TypeError."""
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_problem(
    a: Any, b: Any, M: Any, reg: Any, dtype: torch.dtype | None = None, *, columns: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Validate and convert ``(a, b, M, reg)``; empty or ``None`` weights become uniform.

    With ``columns=True``, ``b`` is ``[m, k]``: ``k`` target histograms (POT's multi-column ``b``), each of
    ``a``'s mass.

    ``M`` may hold ``+inf`` (forbidden pairs) as long as every point with mass can reach one with mass.  The
    masses must agree within ``MASS_RTOL``; :func:`balance` then removes what is left of the mismatch.

    Raises:
        ValueError: naming the offending argument (shape, sign, NaN/−inf, infeasible ``+inf`` pattern, mass
            balance, ``reg ≤ 0``).
        TypeError: ``reg`` is not a real number (e.g. a string or a bool).
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
    has_inf = _check_costs(m_t)
    n, m = m_t.shape
    weights = []
    for name, w, size in (("a", a, n), ("b", b, m)):
        several = columns and name == "b"
        if not several and (w is None or (w.numel() == 0 if isinstance(w, torch.Tensor) else np.size(w) == 0)):
            weights.append(torch.full((size,), 1.0 / size, dtype=dt, device=device))
            continue
        w_t = _as_tensor(w, name).to(dtype=dt, device=device)
        if several:
            if w_t.ndim != 2 or w_t.shape[0] != size or w_t.shape[1] == 0:
                raise ValueError(
                    f"`b` must have shape ({size}, k) (k target histograms as columns), got {tuple(w_t.shape)}"
                )
        else:
            if w_t.ndim == 2 and w_t.shape[1] == 1:
                w_t = w_t[:, 0]
            if w_t.ndim != 1 or w_t.shape[0] != size:
                side = "rows" if name == "a" else "columns"
                raise ValueError(
                    f"`{name}` must have shape ({size},) to match the {side} of `M`, got {tuple(w_t.shape)}"
                )
        if not bool(torch.isfinite(w_t).all()):
            raise ValueError(f"`{name}` contains NaN or inf entries")
        if bool((w_t < 0).any()):
            raise ValueError(f"`{name}` has negative weights")
        if bool((w_t.sum(0) <= 0).any()):
            raise ValueError(f"`{name}` must have positive total mass")
        weights.append(w_t)
    a_t, b_t = weights
    sa = float(a_t.sum(dtype=torch.float64))
    for k, sb in enumerate(b_t.sum(0, dtype=torch.float64).reshape(-1).tolist()):
        if abs(sa - sb) > MASS_RTOL * max(sa, sb):
            which = f"b[:, {k}]" if columns else "b"
            raise ValueError(
                f"`a` and `{which}` must have the same total mass (balanced OT), got sum(a)={sa!r}, sum({which})={sb!r}"
            )
    if has_inf:
        _check_support(a_t, b_t if b_t.ndim == 1 else b_t.amax(1), m_t)
    reg = check_real(reg, "reg")
    if not math.isfinite(reg) or reg <= 0:
        raise ValueError(f"`reg` must be a positive finite number, got {reg!r}")
    return a_t, b_t, m_t, reg


def balance(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(b · Σa/Σb, Σa/Σb)`` (sums in float64): the mismatch that :func:`check_problem` lets through.

    The marginal error ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` can never fall below ``|Σa − Σb|`` (weights normalized in
    float32 differ by ~1e-7), so without this a tolerance below that is unreachable and the solver would spin.
    """
    sa, sb = float(a.sum(dtype=torch.float64)), float(b.sum(dtype=torch.float64))
    if sa == sb:
        return b, 1.0
    return b * (sa / sb), sa / sb


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is a positive finite real number (Python or NumPy scalar)."""
    value = check_real(value, name)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}")
    return value


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (Python or NumPy, 0-d array or tensor; not a ``bool``) ``≥ minimum``."""
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {value!r}")
    return value
