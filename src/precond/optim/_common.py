"""Plumbing shared by every optimizer of ``precond.optim``: argument checks, the step skeleton, the non-finite
policy and its masking, float32 state that survives ``load_state_dict``, copies and pickles.

Each optimizer subclasses :class:`PrecondOptimizer`, implements ``_validate_group`` with the ``check_*``
helpers below and ``_step_groups`` (the base's ``step`` calls it with the params that have a gradient and
the finiteness flag), and keeps the math of one step in a module-level function a test can call directly.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, ClassVar, overload

import torch
from torch.optim import Optimizer

from precond.optim._state_check import check_state_dict

NONFINITE_POLICIES = ("skip", "raise", "off")


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


def check_adamw_like(group: dict[str, Any], where: str) -> None:
    """AdamW's hyperparameters: ``lr``, ``betas``, ``eps > 0``, ``weight_decay >= 0``."""
    check_lr(group, where)
    check_betas(group, where)
    check_real(group, "eps", where, low=0.0, low_open=True)
    check_real(group, "weight_decay", where, low=0.0)


def check_momentum_like(group: dict[str, Any], where: str, *, nesterov: bool) -> None:
    """A momentum method's: ``lr``, ``momentum`` in ``[0, 1)``, a bool ``nesterov`` (where it has one),
    ``weight_decay >= 0``."""
    check_lr(group, where)
    check_real(group, "momentum", where, low=0.0, high=1.0, high_open=True)
    if nesterov:
        check_bool(group, "nesterov", where)
    check_real(group, "weight_decay", where, low=0.0)


def check_ns(group: dict[str, Any], where: str) -> None:
    """Newton–Schulz settings: ``ns_steps >= 1``, three finite ``ns_coefficients``, ``eps >= 0``."""
    check_int(group, "ns_steps", where, low=1)
    coeffs = group["ns_coefficients"]
    if not (
        isinstance(coeffs, (tuple, list))
        and len(coeffs) == 3
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in coeffs)
    ):
        raise ValueError(f"{where}: invalid ns_coefficients={coeffs!r}: must be three finite numbers (a, b, c)")
    check_real(group, "eps", where, low=0.0)


# ---------------------------------------------------------------------------------------------- non-finite policy
def nonfinite_flag(grads: list[torch.Tensor], policy: str, *, squared: bool = True) -> torch.Tensor | None:
    """A 0-d bool tensor, true when every gradient is finite (no host sync), for ``policy="skip"``.

    For ``policy="raise"`` it syncs, raises ``ValueError`` on a non-finite gradient and returns ``None``.  For
    ``policy="off"`` it checks nothing and returns ``None`` (torch.optim's behaviour: a non-finite gradient
    propagates; for training behind a ``GradScaler``, which skips such steps itself, it saves a pass over the
    gradients).  ``squared=True`` (optimizers whose step squares gradients: second moments, Kronecker factors)
    also counts a finite gradient whose squared norm overflows float32 as non-finite, since its step would;
    ``squared=False`` (Lion, whose step only interpolates and takes signs) checks finiteness alone, in the one
    fused pass of :func:`all_finite`.
    """
    if not grads or policy == "off":
        return None
    if squared:
        ok = torch.isfinite(torch.stack(float32_norms(grads)).square().sum())
    else:
        ok = all_finite(grads)
    if policy == "raise":
        if not bool(ok):
            raise ValueError(
                "non-finite (or overflowing) gradient; the optimizer state was not modified. "
                "Use nonfinite='skip' to skip such steps, or clip/scale the loss."
            )
        return None
    return ok


def float32_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's 2-norm as a float32 0-d tensor (one ``_foreach_norm`` per precision class, no host sync).

    16-bit tensors are accumulated and returned in float32: a float16 norm would overflow at 65504, which is a
    finite gradient of only a few hundred per entry, and flag it as non-finite.
    """
    low = [t for t in tensors if t.dtype in (torch.float16, torch.bfloat16)]
    rest = [t for t in tensors if t.dtype not in (torch.float16, torch.bfloat16)]
    norms = list(torch._foreach_norm(low, 2, dtype=torch.float32)) if low else []
    return norms + [n.to(torch.float32) for n in torch._foreach_norm(rest)] if rest else norms


def _fusable(g: torch.Tensor) -> bool:
    """A plain dense gradient without a graph, which the fused check may rewrite with itself."""
    return (
        type(g) is torch.Tensor
        and not g.requires_grad
        and (g.is_contiguous() or g.is_contiguous(memory_format=torch.channels_last))
    )


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor (on the first tensor's device, no host sync): every entry of every tensor is finite.

    Plain dense tensors go through GradScaler's own check, ``torch._amp_foreach_non_finite_check_and_unscale_``
    with scale 1: one fused pass per (device, dtype) that writes each entry back multiplied by 1, which leaves
    every finite entry bitwise unchanged (a non-finite one stays non-finite; its step is skipped anyway).  It
    reads as fast as a sum and is one dispatch, where a per-tensor reduction pays one per tensor.  Other tensors
    (overlapping views such as ``expand``, tensor subclasses, gradients that carry a graph) are never written:
    their norms are checked instead (finite exactly when the entries are, short of a norm above float's range).
    """
    device = tensors[0].device
    by_key: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    rest: list[torch.Tensor] = []
    for t in tensors:
        if _fusable(t):
            by_key.setdefault((t.device, t.dtype), []).append(t)
        else:
            rest.append(t)
    found: dict[torch.device, torch.Tensor] = {}
    for (dev, _), same in by_key.items():
        if dev not in found:
            found[dev] = torch.zeros((), dtype=torch.float32, device=dev)
        torch._amp_foreach_non_finite_check_and_unscale_(same, found[dev], _one(dev))
    flags = [(f == 0).to(device) for f in found.values()]
    if rest:
        flags.append(torch.isfinite(torch.stack([n.to(device) for n in float32_norms(rest)]).sum()))
    return flags[0] if len(flags) == 1 else torch.stack(flags).all()


_ONES: dict[torch.device, torch.Tensor] = {}


def _one(device: torch.device) -> torch.Tensor:
    """A cached float32 1 on ``device`` (the unscale factor of :func:`all_finite`; never written)."""
    one = _ONES.get(device)
    if one is None:
        one = _ONES[device] = torch.ones((), dtype=torch.float32, device=device)
    return one


def cache_sized_batches(lists: list[list[torch.Tensor]], budget: int) -> list[list[list[torch.Tensor]]]:
    """``lists`` (parallel lists of same-shaped tensors) cut into batches of at most ``budget`` elements each.

    An elementwise step over long tensor lists on the CPU runs pass after pass over every tensor, each pass
    streaming the whole list through memory; run batch by batch, a batch's tensors stay in cache from one pass to
    the next.  Small tensors are grouped whole; a tensor above ``budget`` is cut into flat views of ``budget``
    elements (keep ``budget`` a multiple of 64, every SIMD width, so that each element takes the same vector or
    scalar path as in the whole tensor; Lion's 2¹⁸ is).  Only contiguous tensors are cut (others stay whole).
    """
    if sum(t.numel() for t in lists[0]) <= budget:
        return [lists]
    batches: list[list[list[torch.Tensor]]] = []
    current: list[list[torch.Tensor]] = [[] for _ in lists]
    size = 0
    for same in zip(*lists, strict=True):
        n = same[0].numel()
        if n > budget and all(t.is_contiguous() for t in same):
            flats = [t.view(-1) for t in same]
            batches += [[[f[s : s + budget]] for f in flats] for s in range(0, n, budget)]
            continue
        if current[0] and size + n > budget:
            batches.append(current)
            current, size = [[] for _ in lists], 0
        for batch, t in zip(current, same, strict=True):
            batch.append(t)
        size += n
    if current[0]:
        batches.append(current)
    return batches


def host_resolved(ok: torch.Tensor | None) -> torch.Tensor | None:
    """``None`` (the unmasked step) for a finite step whose flag lives on the CPU, else ``ok`` unchanged.

    The masked form of the non-finite skip exists to avoid a host-device sync; a CPU flag is read without one,
    so a finite CPU step skips every masking pass (a kept masked step is bitwise the unmasked one, see
    :func:`masked`), and only a skipped step or an accelerator's flag reaches the masked path.
    """
    if ok is not None and ok.device.type == "cpu" and bool(ok):
        return None
    return ok


@overload
def masked(
    value: torch.Tensor, keep: torch.Tensor | None, off: float | torch.Tensor, dtype: torch.dtype = ...
) -> torch.Tensor: ...
@overload
def masked(
    value: float, keep: torch.Tensor | None, off: float | torch.Tensor, dtype: torch.dtype = ...
) -> float | torch.Tensor: ...
def masked(
    value: float | torch.Tensor,
    keep: torch.Tensor | None,
    off: float | torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> float | torch.Tensor:
    """``value`` on a kept step, ``off`` on a skipped one (``keep`` false), without a host sync.

    The one masking primitive of the non-finite skip: ``off=1`` for a decay or multiplier (state untouched),
    ``off=0`` for a step size, ``off=old`` to select between the new and the old value of a tensor.  Selected,
    not computed (``where`` instead of ``1 - (1 - β)·keep``), so a kept step is bitwise the unmasked one; a
    Python ``value`` becomes a 0-d ``dtype`` tensor on ``keep``'s device (float64 state keeps the
    full-precision constant).  With ``keep=None`` (no masking) it is ``value`` itself.
    """
    if keep is None:
        return value
    if not isinstance(value, torch.Tensor):
        value = torch.full((), value, dtype=dtype, device=keep.device)
    return torch.where(keep.bool(), value, off)


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """float32 for 16-bit (and float32) parameters, float64 for float64 ones: the dtype of floating state."""
    return torch.promote_types(param.dtype, torch.float32)


# ---------------------------------------------------------------------------------------------- the base class
class PrecondOptimizer(Optimizer, metaclass=ABCMeta):
    """``torch.optim.Optimizer`` with the conventions every ``precond`` optimizer shares.

    * hyperparameters are checked by ``_validate_group`` in ``__init__`` and in ``add_param_group`` (errors
      name the argument, the param group and the fix); generator ``params`` are materialised; complex and
      (at ``step``) sparse gradients are rejected;
    * ``nonfinite="skip" | "raise" | "off"`` (see :func:`nonfinite_flag`); "no host sync" applies to accelerators: a
      CPU flag is read directly and a finite CPU step runs unmasked (:func:`host_resolved`);
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
            raise ValueError(f"nonfinite must be 'skip', 'raise' or 'off', got {nonfinite!r}")
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

    # ------------------------------------------------------------------ copy / pickle
    #: Attributes besides torch's ``defaults``/``state``/``param_groups`` that a copy needs (subclasses extend).
    _copied_attributes: ClassVar[tuple[str, ...]] = ("_nonfinite",)
    #: Group keys newer than the first saved checkpoints, with the values those checkpoints ran with: a loaded
    #: state dict that lacks them gets these (:func:`precond.optim._state_check.check_state_dict`).
    optional_group_defaults: ClassVar[dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # torch keeps only defaults, state and param_groups; our settings travel too, so that
        # ``copy.deepcopy`` and ``pickle`` give an optimizer that steps exactly like this one.
        return {**super().__getstate__(), **{k: getattr(self, k) for k in self._copied_attributes}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._after_copy()

    def _after_copy(self) -> None:
        """Rebuild what is derived from the state (subclasses; default: nothing)."""

    # ------------------------------------------------------------------ the step
    #: What to tell a caller who wraps ``step`` in ``torch.compile``; ``None`` where that is supported.
    _compile_hint: ClassVar[str | None] = None
    #: Whether the step squares gradients (second moments, Kronecker factors): then the non-finite check also
    #: counts an overflowing squared norm (:func:`nonfinite_flag`'s ``squared``).  Lion's step does not.
    _squares_gradients: ClassVar[bool] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step (``closure`` re-evaluates the model and returns the loss).

        The skeleton every optimizer shares: evaluate ``closure``, collect each group's parameters with a
        gradient (empty tensors left out: they have nothing to update), check the groups (``_check_step``),
        return early without gradients, resolve the non-finite policy (:func:`nonfinite_flag`) and hand the
        groups and the flag to ``_step_groups``.
        """
        if self._compile_hint is not None and torch.compiler.is_compiling():
            raise torch._dynamo.exc.UserError(
                torch._dynamo.exc.UserErrorType.INVALID_INPUT,
                f"{self.optimizer_name}.step cannot be traced by torch.compile: {self._compile_hint}",
            )
        loss = self._evaluate(closure)
        groups = [(group, self._grads(group)) for group in self.param_groups]
        self._check_step(groups)
        everything = [p for _, params in groups for p in params]
        if everything:
            self._step_groups(groups, host_resolved(self._finite_flag(everything)))  # "raise" raises first
        return loss

    def _check_step(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> None:
        """Validate (or prepare) the state before a step touches it; ``groups`` as for ``_step_groups``."""

    @abstractmethod
    def _step_groups(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]], ok: torch.Tensor | None) -> None:
        """Update every ``(group, params with a gradient)`` pair; ``ok`` is the 0-d finiteness flag of
        ``nonfinite="skip"`` (a false one must make the step a no-op, preferably masked, without a sync) or
        ``None``."""

    # ------------------------------------------------------------------ hooks of the sharded (distributed) step
    def _create_state(self) -> None:
        """Create the state of every parameter now instead of at its first step (default: nothing).

        :class:`precond.optim.distributed.ShardedOptimizer` calls it at construction so that every rank holds the
        same state keys before ``torch.distributed.checkpoint`` looks (no dummy step inside a state-dict call).
        """

    def _host_check_due(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> bool:
        """Whether a non-finite step over ``groups`` is resolved on the host (default: never)."""
        return False

    def _count_host_skip(self) -> None:
        """Record a step skipped on the host (only called where :meth:`_host_check_due` can be true)."""

    def _work_estimate(self, p: torch.Tensor, group: dict[str, Any]) -> float:
        """Relative cost of one step of ``p`` (shape only; default: its size), for balancing ranks' work."""
        return float(p.numel())

    @staticmethod
    def _count_skips(counters: list[torch.Tensor], ok: torch.Tensor | None) -> None:
        """Add one to every ``nonfinite_skips`` counter when the step is skipped (no host sync)."""
        if ok is not None and counters:
            torch._foreach_add_(counters, (~ok).to(counters[0].dtype))

    @staticmethod
    def _evaluate(closure: Callable[[], float] | None) -> float | None:
        """The loss of ``closure`` (re-evaluated with gradients enabled, as ``step`` runs under ``no_grad``)."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _grads(self, group: dict[str, Any]) -> list[torch.Tensor]:
        """The params of ``group`` that have a gradient and at least one entry (sparse gradients rejected).

        ``requires_grad`` is not consulted: like ``torch.optim.AdamW``, a tensor with a ``.grad`` is updated.
        """
        out = []
        for p in group["params"]:
            if p.grad is None or p.numel() == 0:
                continue
            if p.grad.is_sparse:
                raise ValueError(
                    f"{self.optimizer_name} does not support sparse gradients (e.g. nn.Embedding(sparse=True))"
                )
            out.append(p)
        return out

    def _finite_flag(self, params: list[torch.Tensor]) -> torch.Tensor | None:
        grads = [p.grad for p in params if p.grad is not None]
        return nonfinite_flag(grads, self._nonfinite, squared=self._squares_gradients)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = check_state_dict(self, state_dict)  # another optimizer's: ValueError naming it; newer keys filled
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
