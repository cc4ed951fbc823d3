"""Input checking for ``precond.completion``: COO observations (NumPy, torch, lists) in, checked torch tensors out."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

DUPLICATES = ("error", "mean")
REG_SCALINGS = ("none", "count")


def _scalar(value: Any) -> Any:
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        return value.item()
    return value


def check_real(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float (not a ``bool``), ``≥ minimum`` (``> minimum`` with ``strict``)."""
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"`{name}` must be {'>' if strict else '≥'} {minimum}, got {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int (Python or NumPy integer, not a ``bool``) ``≥ minimum``."""
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {int(value)!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_shape(shape: Any) -> tuple[int, int]:
    """``shape`` as ``(m, n)`` with positive integers."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"`shape` must be a pair (n_rows, n_cols), got {shape!r}")
    m = check_int(shape[0], "shape[0]", 1)
    n = check_int(shape[1], "shape[1]", 1)
    return m, n


def _as_array(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`{name}` must be a 1-D array (NumPy array, torch tensor or list): {err}") from err
        if arr.dtype == object:
            raise TypeError(f"`{name}` must be a numeric 1-D array, got an array of Python objects")
        if any(stride < 0 for stride in arr.strides):
            arr = np.ascontiguousarray(arr)
        t = torch.as_tensor(arr)
    if t.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one entry per observation), got shape {tuple(t.shape)}")
    return t


def check_index(x: Any, name: str, size: int, axis: str) -> torch.Tensor:
    """Integer indices in ``[0, size)`` as int64; floats and bools are refused (cast them yourself)."""
    t = _as_array(x, name)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(
            f"`{name}` must hold integer {axis} indices, got dtype {t.dtype}; cast it (e.g. `.astype(np.int64)`)"
        )
    t = t.to(torch.int64)
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0:
            raise ValueError(f"`{name}` has negative {axis} indices (min {lo}); indices must be in [0, {size})")
        if hi >= size:
            raise ValueError(f"`{name}` has {axis} index {hi} out of range for shape[{axis == 'column':d}] = {size}")
    return t


def infer_dtype(values: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """float64 unless asked otherwise or ``values`` already is float32."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float32 if values.dtype == torch.float32 else torch.float64


def check_observations(
    rows: Any,
    cols: Any,
    values: Any,
    shape: tuple[int, int],
    dtype: torch.dtype | None,
    duplicates: str,
    *,
    prefix: str = "",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked ``(rows, cols, values)``: int64, int64, float of ``dtype``, all on the device of ``values``.

    ``duplicates="error"`` refuses a repeated ``(row, col)`` pair; ``"mean"`` replaces each repeated pair by one
    observation holding the mean of its values; ``"keep"`` (validation data) leaves them.  ``prefix`` names the
    argument in messages (``"validation "``).
    """
    names = [f"{prefix}{n}" for n in ("rows", "cols", "values")]
    v = _as_array(values, names[2])
    if v.dtype == torch.bool or v.is_complex():
        raise TypeError(f"`{names[2]}` must hold real numbers, got dtype {v.dtype}")
    dt = infer_dtype(v, dtype)
    v = v.to(dt)
    r = check_index(rows, names[0], shape[0], "row").to(v.device)
    c = check_index(cols, names[1], shape[1], "column").to(v.device)
    if not (r.numel() == c.numel() == v.numel()):
        raise ValueError(
            f"`{names[0]}`, `{names[1]}` and `{names[2]}` must have the same length (one entry per observation), "
            f"got {r.numel()}, {c.numel()} and {v.numel()}"
        )
    if v.numel() == 0:
        raise ValueError(f"`{names[2]}` is empty: at least one observation is needed")
    bad = ~torch.isfinite(v)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"`{names[2]}` has {int(bad.sum())} NaN or inf entries (first at position {first}: {float(v[first])}); "
            "drop them: a missing entry is simply not listed"
        )
    if duplicates == "keep":
        return r, c, v
    key = r * shape[1] + c
    uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    if uniq.numel() == key.numel():
        return r, c, v
    if duplicates == "error":
        pos = int(torch.nonzero(counts > 1)[0, 0])
        k = int(uniq[pos])
        raise ValueError(
            f"{int((counts > 1).sum())} (row, col) pairs of `{names[0]}`/`{names[1]}` occur more than once "
            f"(first: ({k // shape[1]}, {k % shape[1]}), {int(counts[pos])} times); pass duplicates='mean' to average "
            "them, or remove them"
        )
    sums = torch.zeros(uniq.numel(), dtype=torch.float64, device=v.device).index_add_(0, inverse, v.double())
    v = (sums / counts.double()).to(dt)
    return uniq // shape[1], uniq % shape[1], v
