"""The value behind :func:`precond.ot.sinkhorn2` and :func:`precond.ot.pot.sinkhorn2`: one or several target
histograms, linear or entropic objective, differentiable for torch inputs (:mod:`precond.ot._autograd`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from precond.ot._autograd import SinkhornValue, entropic_value, plan_of
from precond.ot._batched import batched_sinkhorn, check_batched
from precond.ot._validate import check_count, check_positive, default_tol
from precond.ot.result import ConvergenceWarning
from precond.ot.sinkhorn import METHODS, sinkhorn

OBJECTIVES = ("linear", "entropic")

#: Options of :func:`precond.ot.sinkhorn` that the several-histogram solver understands.
BATCHED_OPTIONS = ("tol", "max_iter", "dtype", "warn")


@dataclass
class Values:
    """What a ``sinkhorn2`` call computed: values ``[k]`` and potentials ``[n, k]``, ``[m, k]`` (detached)."""

    values: torch.Tensor
    reg: float
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    converged: bool
    marginal_error: float
    history: list[Any]


def is_multi(b: Any) -> bool:
    """Whether ``b`` holds several target histograms as columns (``[m, k]``, ``k ≥ 2``)."""
    shape = getattr(b, "shape", None)
    if shape is None and b is not None and not isinstance(b, (int, float)):
        shape = np.shape(b)
    return shape is not None and len(shape) == 2 and shape[1] >= 2


def solve_values(
    a: Any,
    b: Any,
    M: Any,
    reg: float,
    method: str = "sinkhorn",
    objective: str = "linear",
    batched: bool | None = None,
    **kwargs: Any,
) -> Values:
    """Solve and return the objective values (``batched=None``: several histograms iff ``b`` is ``[m, k≥2]``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {objective!r}")
    if batched is None:
        batched = is_multi(b)
    if not batched:
        res = sinkhorn(a, b, M, reg, method=method, **kwargs)
        if objective == "entropic":
            cost = entropic_value(res.plan, _cost_matrix(M, res.plan), res.reg)
        else:
            cost = torch.as_tensor(res.cost, dtype=res.plan.dtype, device=res.plan.device)
        f, g = res.f[:, None], res.g[:, None]
        return Values(cost.reshape(1), res.reg, f, g, res.iterations, res.converged, res.marginal_error, res.history)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    unknown = sorted(set(kwargs) - set(BATCHED_OPTIONS))
    if unknown:
        raise ValueError(f"option(s) {unknown} are not supported with several target histograms (`b` of shape [m, k])")
    tol, max_iter = kwargs.get("tol"), kwargs.get("max_iter", 100_000)
    max_iter = check_count(max_iter, "max_iter", minimum=0)
    a_t, b_t, m_t, reg = check_batched(a, b, M, reg, kwargs.get("dtype"))
    mass = float(a_t.sum(dtype=torch.float64))
    tol = default_tol(m_t.dtype, mass) if tol is None else check_positive(tol, "tol")
    # As in :func:`precond.ot.sinkhorn`: remove the mass mismatch the check lets through (float32 normalization),
    # else the marginal error could never fall below it.
    b_t = b_t * (mass / b_t.sum(0, dtype=torch.float64)).to(b_t.dtype)
    out = batched_sinkhorn(a_t, b_t, m_t, reg, tol, max_iter)
    values = out.costs
    if objective == "entropic":
        plans = (plan_of(out.f[:, k], out.g[:, k], m_t, reg) for k in range(b_t.shape[1]))
        values = torch.stack([entropic_value(plan, m_t, reg) for plan in plans])
    err = float(out.marginal_errors.max())
    if not out.converged and kwargs.get("warn", True):
        warnings.warn(
            f"Sinkhorn ({b_t.shape[1]} histograms) did not converge: largest marginal error {err:.3e} > tol={tol:.1e} "
            f"after {out.iterations} iterations (reg={reg:g}). Increase max_iter or reg.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return Values(values, reg, out.f, out.g, out.iterations, out.converged, err, out.history)


def _cost_matrix(M: Any, like: torch.Tensor) -> torch.Tensor:
    m_t = M.detach() if isinstance(M, torch.Tensor) else torch.as_tensor(M)
    return m_t.to(dtype=like.dtype, device=like.device)


def attach_grad(a: Any, b: Any, M: Any, objective: str, out: Values) -> torch.Tensor:
    """``out.values`` as a tensor that backpropagates into whichever of ``a``, ``b``, ``M`` require grad."""
    tensors = [x if isinstance(x, torch.Tensor) and x.requires_grad else None for x in (a, b, M)]
    if not torch.is_grad_enabled() or all(x is None for x in tensors):
        return out.values
    if tensors[2] is None:
        tensors[2] = _cost_matrix(M, out.f)
    ta, tb, tm = tensors
    assert tm is not None
    return SinkhornValue.apply(ta, tb, tm, out.f, out.g, out.reg, objective, out.values)


def sinkhorn2(a: Any, b: Any, M: Any, reg: float, method: str = "sinkhorn", **kwargs: Any) -> Any:
    """Implementation of :func:`precond.ot.sinkhorn2` (see there)."""
    objective = kwargs.pop("objective", "linear")
    out = solve_values(a, b, M, reg, method=method, objective=objective, **kwargs)
    multi = is_multi(b)
    if not any(isinstance(x, torch.Tensor) for x in (a, b, M)):
        values = out.values.cpu().numpy()
        return values if multi else float(values[0])
    value = attach_grad(a, b, M, objective, out)
    if isinstance(M, torch.Tensor) and M.is_floating_point():
        value = value.to(M.dtype)
    return value if multi else value[0]
