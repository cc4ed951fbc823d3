"""Plumbing shared by every optimizer of ``precond.optim``: argument checks, the non-finite policy, and
float32 state that survives ``load_state_dict``.

Each optimizer subclasses :class:`PrecondOptimizer`, implements ``_validate_group`` with the ``check_*``
helpers below, and keeps the math of one step in a module-level function a test can call directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import torch
from torch.optim import Optimizer

from precond.optim._state_check import check_state_dict

NONFINITE_POLICIES = ("skip", "raise")


# ---------------------------------------------------------------------------------------------- argument checks
def _bad(where: str, name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{where}: invalid {name}={value!r}: {why}")


def _as_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return value


def check_real(
    group: dict[str, Any],
    name: str,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``group[name]`` is a finite real number in the given range (open/closed ends)."""
    value = _as_number(group[name])
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}, "
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        span = f" in {lo or '(-inf, '}{hi or 'inf)'}" if (low is not None or high is not None) else ""
        raise _bad(where, name, group[name], f"must be a finite number{span}")


def check_int(group: dict[str, Any], name: str, where: str, *, low: int = 0) -> None:
    """``group[name]`` is an ``int`` (not a bool) ``>= low``."""
    value = group[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(where, name, value, f"must be an integer >= {low}")


def check_bool(group: dict[str, Any], name: str, where: str) -> None:
    if not isinstance(group[name], bool):
        raise _bad(where, name, group[name], "must be True or False")


def check_choice(group: dict[str, Any], name: str, where: str, choices: Iterable[Any]) -> None:
    options = tuple(choices)
    if group[name] not in options:
        raise _bad(where, name, group[name], f"must be one of {', '.join(repr(c) for c in options)}")


def check_betas(group: dict[str, Any], where: str, *, name: str = "betas", count: int = 2) -> None:
    """``group[name]`` is ``count`` numbers in ``[0, 1)``."""
    betas = group[name]
    ok = isinstance(betas, (tuple, list)) and len(betas) == count
    ok = ok and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)
    if not ok:
        raise _bad(where, name, betas, f"must be {count} numbers in [0, 1)")


def check_lr(group: dict[str, Any], where: str) -> None:
    check_real(group, "lr", where, low=0.0)


# ---------------------------------------------------------------------------------------------- non-finite policy
def nonfinite_flag(grads: list[torch.Tensor], policy: str) -> torch.Tensor | None:
    """A 0-d bool tensor, true when every gradient is finite (no host sync), for ``policy="skip"``.

    For ``policy="raise"`` it syncs, raises ``ValueError`` on a non-finite gradient and returns ``None``.
    """
    if not grads:
        return None
    norms = torch._foreach_norm(grads)
    ok = torch.isfinite(torch.stack([n.to(torch.float32) for n in norms]).square().sum())
    if policy == "raise":
        if not bool(ok):
            raise ValueError(
                "non-finite (or overflowing) gradient; the optimizer state was not modified. "
                "Use nonfinite='skip' to skip such steps, or clip/scale the loss."
            )
        return None
    return ok


def masked_decay(beta: float, keep: torch.Tensor | None) -> float | torch.Tensor:
    """EMA decay that becomes 1 (state untouched) when ``keep`` is false.

    Selected, not computed (``where`` instead of ``1 - (1 - β)·keep``), so a kept step is bitwise the unmasked
    one.  With ``keep=None`` (no masking) it is just ``beta``.
    """
    return beta if keep is None else torch.where(keep.bool(), beta, 1.0)


def masked_scale(scale: float | torch.Tensor, keep: torch.Tensor | None) -> float | torch.Tensor:
    """``scale`` where the step is kept, ``0`` where it is skipped (selected, so kept steps are bitwise equal)."""
    if keep is None:
        return scale
    return torch.where(keep.bool(), torch.as_tensor(scale, dtype=torch.float32, device=keep.device), 0.0)


# ---------------------------------------------------------------------------------------------- the base class
class PrecondOptimizer(Optimizer):
    """``torch.optim.Optimizer`` with the conventions every ``precond`` optimizer shares.

    * hyperparameters are checked by ``_validate_group`` in ``__init__`` and in ``add_param_group`` (errors
      name the argument, the param group and the fix); generator ``params`` are materialised; complex and
      (at ``step``) sparse gradients are rejected;
    * ``nonfinite="skip" | "raise"`` (see :func:`nonfinite_flag`);
    * floating state is float32 whatever the parameter dtype, and it and integer counters keep their dtype
      across ``load_state_dict`` (torch would cast them to the parameter dtype).
    """

    #: Name used in error messages.
    optimizer_name = "optimizer"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        nonfinite: str = "skip",
    ) -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be 'skip' or 'raise', got {nonfinite!r}")
        self._nonfinite = nonfinite
        self._validate_group(defaults, self.optimizer_name)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        """Raise ``ValueError`` naming the bad hyperparameter; subclasses override."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        where = f"{self.optimizer_name} param group {len(self.param_groups)}"
        self._validate_group({**self.defaults, **param_group}, where)
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)  # may be a generator
        param_group = {**param_group, "params": params}
        if any(p.is_complex() for p in params if isinstance(p, torch.Tensor)):
            raise ValueError(
                f"{where}: {self.optimizer_name} does not support complex parameters; use torch.view_as_real"
            )
        super().add_param_group(param_group)

    @staticmethod
    def _evaluate(closure: Callable[[], float] | None) -> float | None:
        """The loss of ``closure`` (re-evaluated with gradients enabled, as ``step`` runs under ``no_grad``)."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _grads(self, group: dict[str, Any]) -> list[torch.Tensor]:
        """The params of ``group`` that have a gradient (sparse gradients rejected)."""
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise ValueError(
                    f"{self.optimizer_name} does not support sparse gradients (e.g. nn.Embedding(sparse=True))"
                )
            out.append(p)
        return out

    def _finite_flag(self, params: list[torch.Tensor]) -> torch.Tensor | None:
        return nonfinite_flag([p.grad for p in params if p.grad is not None], self._nonfinite)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_state_dict(self, state_dict)  # another optimizer's state: ValueError naming it, not a later KeyError
        originals = original_states(self, state_dict)
        super().load_state_dict(state_dict)
        restore_float32_state(self, originals)


def original_states(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[torch.Tensor, dict[str, Any]]:
    """Map each of ``optimizer``'s params to its entry in ``state_dict["state"]`` (before torch casts it)."""
    saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
    params = chain.from_iterable(g["params"] for g in optimizer.param_groups)
    saved = state_dict["state"]
    return {p: saved[i] for i, p in zip(saved_ids, params, strict=False) if i in saved}


def restore_float32_state(optimizer: Optimizer, originals: dict[torch.Tensor, dict[str, Any]]) -> None:
    """Undo torch's cast of loaded state to the parameter dtype.

    torch casts every state tensor but ``step`` to the parameter dtype (float32 moments of bf16 params and
    int64 counters included) and hands back the caller's own tensors where no cast was needed.  Every tensor
    becomes a copy of the saved original instead: dtypes are kept, and in-place updates never reach the
    caller's state dict.
    """
    for p, saved in originals.items():
        state = optimizer.state[p]
        for key, value in saved.items():
            loaded = state.get(key)
            if isinstance(value, torch.Tensor) and isinstance(loaded, torch.Tensor):
                state[key] = value.detach().to(device=loaded.device, copy=True)
