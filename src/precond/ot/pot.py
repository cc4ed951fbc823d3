"""Drop-in entry for POT users: ``ot.sinkhorn`` / ``ot.sinkhorn2``'s signature, arrays in, arrays out.

>>> from precond.ot import pot
>>> P = pot.sinkhorn(a, b, M, reg, method="sinkhorn_stabilized", numItermax=1000, stopThr=1e-9)  # doctest: +SKIP
>>> P.sum(0)  # a NumPy array for NumPy input, a tensor for torch input  # doctest: +SKIP

Differences from POT, all deliberate:

* Every POT method name solves the same problem with precond's solvers (:data:`POT_METHODS`): the result agrees
  with POT's at convergence; iteration counts and ``log["err"]`` do not (precond measures the L1 error
  ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` at every iteration, POT the L2 column error every 10).  ``stopThr`` is precond's
  ``tol`` on that L1 error, which bounds POT's.  POT-only tuning knobs (``tau``, ``print_period``,
  ``stopInnerThr``) are accepted and ignored; precond's own options (``keep``, ``dtype``, …) pass through.
* The log holds the union of the keys of POT's solvers (``u``, ``v``, ``log_u``, ``log_v``, ``logu``, ``logv``,
  ``alpha``, ``beta``, ``warmstart``, ``err``, ``niter``, ``n_iter``); potentials are unique only up to
  ``(log_u + c, log_v − c)``, so they may differ from POT's by that constant.  ``niter`` is precond's count of
  iterations done (POT's is the index of its last iteration), ``err`` precond's error at each iteration.
* :func:`sinkhorn2` is differentiable for torch inputs at the optimum (no unrolled iterations, see
  :mod:`precond.ot._autograd`); the plan of :func:`sinkhorn` is not (it is returned detached, with a warning).
* ``warmstart`` is not supported (a ``ValueError``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from precond.ot._loss import Values, attach_grad, solve_values
from precond.ot.sinkhorn import sinkhorn as _sinkhorn

#: POT method name → (precond method, extra options).  ``sinkhorn_stabilized`` and ``greenkhorn`` map to
#: precond's ``"sinkhorn"`` (already stabilized by absorption, :mod:`precond.ot._scaling`); ``"sns"`` is extra.
POT_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "sinkhorn": ("sinkhorn", {}),
    "sinkhorn_knopp": ("sinkhorn", {}),
    "sinkhorn_log": ("sinkhorn_log", {}),
    "sinkhorn_stabilized": ("sinkhorn", {}),
    "sinkhorn_epsilon_scaling": ("sinkhorn", {"epsilon_scaling": True}),
    "greenkhorn": ("sinkhorn", {}),
    "sns": ("sns", {}),
}

#: POT knobs that steer how its solvers iterate, not what they solve: accepted and ignored.
_IGNORED = ("tau", "print_period", "stopInnerThr")


def _options(method: Any, numItermax: Any, stopThr: Any, warn: bool, kwargs: dict[str, Any]) -> tuple[str, dict]:
    if not isinstance(method, str) or method.lower() not in POT_METHODS:
        raise ValueError(f"`method` must be one of {sorted(POT_METHODS)}, got {method!r}")
    ours, extra = POT_METHODS[method.lower()]
    opts = {k: v for k, v in kwargs.items() if k not in _IGNORED}
    inner = opts.pop("numInnerItermax", 100)
    if isinstance(numItermax, bool) or not isinstance(numItermax, (int, np.integer)):
        raise ValueError(f"`numItermax` must be an integer ≥ 0, got {numItermax!r}")
    if numItermax < 0:
        raise ValueError(f"`numItermax` must be an integer ≥ 0, got {numItermax!r}")
    max_iter = int(numItermax)
    if isinstance(stopThr, bool) or not isinstance(stopThr, (int, float, np.floating)) or not stopThr > 0:
        raise ValueError(f"`stopThr` must be a positive number, got {stopThr!r}")
    if not math.isfinite(stopThr):
        raise ValueError(f"`stopThr` must be finite, got {stopThr!r}")
    if extra.get("epsilon_scaling"):  # POT: numItermax outer iterations of numInnerItermax each
        max_iter *= int(inner)
    return ours, {**extra, **opts, "tol": float(stopThr), "max_iter": max_iter, "warn": warn}


def _is_torch(*xs: Any) -> bool:
    return any(isinstance(x, torch.Tensor) for x in xs)


class _Output:
    """Converts the solver's torch tensors to the caller's array type: NumPy (lists too) or torch on ``M``'s device."""

    def __init__(self, a: Any, b: Any, M: Any) -> None:
        self.torch = _is_torch(a, b, M)
        if self.torch:
            ref = next(x for x in (M, a, b) if isinstance(x, torch.Tensor))
            self.dtype = ref.dtype if ref.is_floating_point() else torch.float64
            self.device = ref.device
        else:
            self.np_dtype = np.float32 if np.asarray(M).dtype == np.float32 else np.float64

    def __call__(self, x: torch.Tensor) -> Any:
        if self.torch:
            return x.to(dtype=self.dtype, device=self.device)
        return x.detach().cpu().numpy().astype(self.np_dtype, copy=False)

    def scalar(self, x: torch.Tensor) -> Any:
        return x.to(dtype=self.dtype) if self.torch else self.np_dtype(float(x))


def _log_dict(f: torch.Tensor, g: torch.Tensor, reg: float, err: list[float], niter: int, out: _Output) -> dict:
    log_u, log_v = f / reg, g / reg
    alpha, beta = out(f), out(g)
    return {
        "u": out(log_u.exp()),
        "v": out(log_v.exp()),
        "log_u": out(log_u),
        "log_v": out(log_v),
        "logu": out(log_u),
        "logv": out(log_v),
        "alpha": alpha,
        "beta": beta,
        "warmstart": (alpha, beta),
        "err": err,
        "niter": niter,
        "n_iter": niter,
    }


def _print(errors: list[float]) -> None:
    print("{:5s}|{:12s}".format("It.", "Err") + "\n" + "-" * 19)
    for it, err in enumerate(errors):
        if it % 10 == 0 or it == len(errors) - 1:
            print(f"{it:5d}|{err:8e}|")


def _check_common(a: Any, b: Any, M: Any, warmstart: Any) -> None:
    if warmstart is not None:
        raise ValueError("`warmstart` is not supported by precond.ot.pot; omit it (the solvers start from zero)")
    if M is None:
        raise ValueError("`M` (cost matrix) is required")


def _multi(b: Any) -> bool:
    return b is not None and np.ndim(b.detach() if isinstance(b, torch.Tensor) else b) == 2


def _batched(a: Any, b: Any, M: Any, reg: float, method: str, opts: dict, log: bool, verbose: bool) -> Any:
    out = _Output(a, b, M)
    opts = {k: v for k, v in opts.items() if k != "epsilon_scaling"}  # a warm start only: same problem, same answer
    values: Values = solve_values(a, b, M, reg, method=method, batched=True, **opts)
    if verbose:
        _print([float(e) for e in values.history])
    res = out(attach_grad(a, b, M, "linear", values))
    if log:
        return res, _log_dict(
            values.f, values.g, values.reg, [float(e) for e in values.history], values.iterations, out
        )
    return res


def sinkhorn(
    a: Any,
    b: Any,
    M: Any,
    reg: float,
    method: str = "sinkhorn",
    numItermax: int = 1000,
    stopThr: float = 1e-9,
    verbose: bool = False,
    log: bool = False,
    warn: bool = True,
    warmstart: Any = None,
    **kwargs: Any,
) -> Any:
    """POT's ``ot.sinkhorn``: the entropic-OT plan ``[n, m]`` (and the log dict if ``log=True``).

    ``a``, ``b``, ``M`` as in :func:`precond.ot.sinkhorn` (NumPy, lists or torch; empty weights mean uniform);
    ``b`` may be ``[m, k]``, in which case, as in POT, the ``k`` transport costs ``⟨P_k, M⟩`` are returned
    instead of a plan (solved together, :mod:`precond.ot._batched`).  ``method``: a name of
    :data:`POT_METHODS`; ``numItermax``, ``stopThr``: iteration cap and tolerance (module docstring);
    ``warn``: a :class:`precond.ot.ConvergenceWarning` (a ``UserWarning``) when ``stopThr`` is not reached.

    Returns NumPy arrays (float32 for a float32 ``M``, else float64) for NumPy or list input, torch tensors in
    ``M``'s dtype and device for torch input.
    """
    _check_common(a, b, M, warmstart)
    ours, opts = _options(method, numItermax, stopThr, warn, kwargs)
    if _multi(b):
        return _batched(a, b, M, reg, ours, opts, log, verbose)
    out = _Output(a, b, M)
    if any(isinstance(x, torch.Tensor) and x.requires_grad for x in (a, b, M)):
        warnings.warn(
            "precond.ot.pot.sinkhorn returns the plan detached (no gradient); use precond.ot.pot.sinkhorn2 for a "
            "differentiable OT loss",
            UserWarning,
            stacklevel=2,
        )
    res = _sinkhorn(a, b, M, reg, method=ours, **opts)
    errors = [entry[1] for entry in res.history]
    if verbose:
        _print(errors)
    plan = out(res.plan)
    if log:
        return plan, _log_dict(res.f, res.g, res.reg, errors, res.iterations, out)
    return plan


def sinkhorn2(
    a: Any,
    b: Any,
    M: Any,
    reg: float,
    method: str = "sinkhorn",
    numItermax: int = 1000,
    stopThr: float = 1e-9,
    verbose: bool = False,
    log: bool = False,
    warn: bool = False,
    warmstart: Any = None,
    **kwargs: Any,
) -> Any:
    """POT's ``ot.sinkhorn2``: the transport cost ``⟨P, M⟩`` of the entropic plan, without the entropy term.

    Same arguments as :func:`sinkhorn` (``warn`` off by default, as in POT).  ``b`` of shape ``[m, k]`` gives
    ``k`` costs.  For torch inputs that require grad the result backpropagates into ``a``, ``b`` and ``M``
    with the exact gradient at the optimum (implicit differentiation, :mod:`precond.ot._autograd`).

    Returns a NumPy scalar (``[k]`` array) for NumPy or list input, a 0-d (``[k]``) tensor for torch input.
    """
    _check_common(a, b, M, warmstart)
    ours, opts = _options(method, numItermax, stopThr, warn, kwargs)
    if _multi(b):
        return _batched(a, b, M, reg, ours, opts, log, verbose)
    out = _Output(a, b, M)
    values = solve_values(a, b, M, reg, method=ours, batched=False, **opts)
    if verbose:
        _print([entry[1] for entry in values.history])
    value = out.scalar(attach_grad(a, b, M, "linear", values)[0])
    if log:
        errors = [entry[1] for entry in values.history]
        return value, _log_dict(values.f[:, 0], values.g[:, 0], values.reg, errors, values.iterations, out)
    return value


__all__ = ["POT_METHODS", "sinkhorn", "sinkhorn2"]
