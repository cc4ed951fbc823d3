"""The machinery SOAP and Shampoo share: Kronecker-factored state over merged/blocked parameter layouts.

Every parameter is planned into blocks (:func:`precond.linalg.plan_layout`: dimension merging, balanced
blocking); same-shaped blocks of a param group live in one batched bucket (:mod:`precond.optim._buckets`), and
``optimizer.state[p]`` holds views into the buckets so ``state_dict()`` works untouched.  This module owns the
bookkeeping (buckets, state views, save/load, the non-finite policy, weight decay, writing updates back);
a subclass supplies the names of its state and the math of one batched step.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Hashable, Iterable
from typing import Any, ClassVar

import torch

from precond.linalg import BlockLayout, plan_layout
from precond.optim._buckets import Bucket, Member, allocate, build_buckets
from precond.optim._common import PrecondOptimizer, check_bool, check_choice, check_int, masked, original_states
from precond.optim._state_check import check_state_dict

MERGE_RULES = {True: "greedy", False: "none", "greedy": "greedy", "fan_in": "fan_in", "none": "none"}
LAYOUT_KEYS = ("max_precond_dim", "merge_dims", "blocking", "precondition_1d")
#: Counters kept once per parameter (the rest are per block).
PER_PARAM_COUNTERS = ("step", "nonfinite_skips")


def check_layout(group: dict[str, Any], where: str) -> None:
    """Validate the layout hyperparameters shared by every factored optimizer."""
    check_int(group, "max_precond_dim", where, low=0)
    check_choice(group, "merge_dims", where, MERGE_RULES)
    check_bool(group, "blocking", where)
    check_bool(group, "precondition_1d", where)


class FactoredOptimizer(PrecondOptimizer):
    """Base of the Kronecker-factored optimizers.

    Subclasses set ``moment_names`` (per-block tensors in the block's merged shape), ``matrix_kinds``
    (per factored dim ``[B, d, d]`` matrices, ``"zeros"`` or ``"eye"`` at start), ``counter_dtypes`` (``[B]``
    counters; ``step`` and ``nonfinite_skips`` are per parameter, others per block) and implement ``_phase``,
    ``_needs_host_check`` and ``_step_bucket``.  ``state[p]["calls"]`` counts the steps in which ``p`` had a
    gradient and drives the schedules.
    """

    moment_names: ClassVar[tuple[str, ...]] = ()
    matrix_kinds: ClassVar[dict[str, str]] = {}
    counter_dtypes: ClassVar[dict[str, torch.dtype]] = {}

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        data_format: str = "channels_first",
        nonfinite: str = "skip",
    ) -> None:
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
        self._data_format = data_format
        self._buckets: list[Bucket] | None = None
        self._layout_keys: list[tuple] = []
        super().__init__(params, defaults, nonfinite)

    # ------------------------------------------------------------------ hooks for subclasses
    @abstractmethod
    def _phase(self, p: torch.Tensor, group: dict[str, Any]) -> Hashable:
        """What kind of step ``p`` takes next (blocks with equal phases are stepped together)."""

    @abstractmethod
    def _needs_host_check(self, phase: Hashable) -> bool:
        """True for phases that run ``eigh``/QR: their finiteness flag is resolved on the host."""

    @abstractmethod
    def _step_bucket(
        self, bucket: Bucket, group: dict[str, Any], ok: torch.Tensor | None, phases: dict[torch.Tensor, Hashable]
    ) -> None:
        """Advance the state of ``bucket``'s members that have a gradient and write their updates back."""

    def _decay_weights_of(
        self, group: dict[str, Any], params: list[torch.Tensor], keep: torch.Tensor | None, after: bool
    ) -> None:
        """Decoupled weight decay in ``torch.optim.AdamW``'s order (before the update)."""
        wd = group["weight_decay"]
        if wd != 0 and not after:
            decay_weights(params, group["lr"] * wd, keep)

    # ------------------------------------------------------------------ torch.optim plumbing
    _copied_attributes: ClassVar[tuple[str, ...]] = (
        *PrecondOptimizer._copied_attributes,
        "_data_format",
        "_layout_keys",
    )
    _compile_hint: ClassVar[str | None] = (
        "call opt.step() uncompiled (its refresh steps run eigh/QR and pick the schedule on the host); "
        "compile the model instead"
    )

    def _after_copy(self) -> None:
        # the copied state holds views into copied buffers; the buckets are rebuilt from it on the next step
        self._buckets = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if getattr(self, "_buckets", None) is not None:
            self._rebuild(None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch casts floating state to the parameter dtype on load; the state here is float32 whatever the
        # parameter dtype, so the buffers are refilled from the caller's original (uncast) tensors.
        state_dict = check_state_dict(self, state_dict)  # another optimizer's: ValueError naming it; newer keys filled
        originals = original_states(self, state_dict)
        torch.optim.Optimizer.load_state_dict(self, state_dict)
        self._data_format = state_dict.get("data_format", self._data_format)
        self._rebuild(originals)

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["data_format"] = self._data_format
        return out

    # ------------------------------------------------------------------ layout / buckets
    def _plan(self, p: torch.Tensor, group: dict[str, Any]) -> BlockLayout:
        return plan_layout(
            p.shape,
            group["max_precond_dim"],
            merge=MERGE_RULES[group["merge_dims"]],  # type: ignore[arg-type]
            blocking=group["blocking"],
            precondition_1d=group["precondition_1d"],
            channels_last=self._data_format == "channels_last",
        )

    def _moment_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self.moment_names

    def _rebuild(self, loaded: dict[torch.Tensor, dict[str, Any]] | None) -> None:
        """(Re)create the batched buffers, copy existing or loaded state in, point ``self.state`` at views."""
        source = loaded if loaded is not None else {p: dict(s) for p, s in self.state.items()}
        buckets = build_buckets(self.param_groups, self._plan, self._has_buffers)
        fresh: dict[torch.Tensor, dict[str, Any]] = {}
        for bucket in buckets:
            moments = self._moment_names(self.param_groups[bucket.group])
            allocate(bucket, moments, self.counter_dtypes, self.matrix_kinds)
            for i, member in enumerate(bucket.members):
                p, b = member.param, member.block
                st = fresh.setdefault(p, self._empty_param_state(len(member.layout.blocks), moments))
                old = source.get(p) or {}
                if "calls" in old:
                    _copy_in(bucket, i, b, old)
                    st["calls"] = int(old["calls"])
                for name in moments:
                    st[name][b] = bucket.moments[name][i]
                for name in self.matrix_kinds:
                    st[name][b] = [None if m is None else m[i] for m in bucket.matrices[name]]
                for name, counter in bucket.counters.items():
                    if name not in PER_PARAM_COUNTERS:
                        st[name][b] = counter[i]
                    elif b == 0:
                        st[name] = counter[i]
        for p, st in fresh.items():
            self.state[p] = st
        self._buckets = buckets
        self._layout_keys = [self._layout_key(g) for g in self.param_groups]

    def _has_buffers(self, p: torch.Tensor) -> bool:
        """Whether ``p`` gets preconditioner state: not empty, and trainable, holding a gradient (a ``.grad``
        is updated whatever ``requires_grad`` says, as ``torch.optim.AdamW`` does) or already stateful."""
        return p.numel() > 0 and (p.requires_grad or p.grad is not None or p in self.state)

    def _empty_param_state(self, n_blocks: int, moments: tuple[str, ...]) -> dict[str, Any]:
        state: dict[str, Any] = {"calls": 0}
        for name in (*moments, *self.matrix_kinds, *self.counter_dtypes):
            state[name] = None if name in PER_PARAM_COUNTERS else [None] * n_blocks
        return state

    def _layout_key(self, group: dict[str, Any]) -> tuple:
        return (*(group[k] for k in LAYOUT_KEYS), self._data_format)

    # ------------------------------------------------------------------ the step
    def _check_step(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> None:
        for gi, (group, _) in enumerate(groups):
            if gi < len(self._layout_keys) and self._layout_key(group) != self._layout_keys[gi]:
                raise ValueError(
                    f"param group {gi}: {', '.join(LAYOUT_KEYS)} and data_format fix the preconditioner's "
                    "shapes and cannot change after the first step; create a new optimizer instead"
                )
        # first step, after a copy, or a param without state (e.g. unfrozen after the buffers were built)
        if self._buckets is None or any(p not in self.state for _, params in groups for p in params):
            self._rebuild(None)

    def _step_groups(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]], ok: torch.Tensor | None) -> None:
        phases = {p: self._phase(p, g) for g, params in groups for p in params}
        if ok is not None and any(self._needs_host_check(phase) for phase in phases.values()):
            # Steps that compute a basis/root run eigh/QR anyway; they resolve the finiteness flag on the host,
            # and a skipped one leaves the schedule where it was.  Other steps stay sync-free (masked).
            if not bool(ok):
                self._count_host_skip()
                return
            ok = None
        keep = None if ok is None else ok.to(torch.float32)
        assert self._buckets is not None
        for gi, (group, params) in enumerate(groups):
            if not params:
                continue
            self._decay_weights_of(group, params, keep, after=False)
            for bucket in self._buckets:
                if bucket.group == gi:
                    self._step_bucket(bucket, group, ok, phases)
            self._decay_weights_of(group, params, keep, after=True)
            for p in params:
                self.state[p]["calls"] += 1

    def _create_state(self) -> None:
        self._rebuild(None)

    def _host_check_due(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> bool:
        return any(self._needs_host_check(self._phase(p, g)) for g, params in groups for p in params)

    def _work_estimate(self, p: torch.Tensor, group: dict[str, Any]) -> float:
        """Per block: the projections/factor updates ``numel·Σd`` plus the refresh ``Σd³`` amortized over
        ``precondition_frequency``, over the factored dims ``d`` (a Kronecker step costs ``m·n·(m+n)``)."""
        layout = self._plan(p, group)
        total = 0.0
        for shape, factored in zip(layout.block_shapes, layout.factored, strict=True):
            numel = math.prod(shape)
            dims = [d for d, on in zip(shape, factored, strict=True) if on]
            total += numel * (1 + sum(dims)) + sum(d**3 for d in dims) / group["precondition_frequency"]
        return total

    def _count_host_skip(self) -> None:
        assert self._buckets is not None
        for bucket in self._buckets:
            for sl, _ in bucket.runs(lambda m: True if m.param.grad is not None else None):
                bucket.counters["nonfinite_skips"][sl].add_(1)


# ---------------------------------------------------------------------- helpers
def _copy_in(bucket: Bucket, i: int, b: int, old: dict[str, Any]) -> None:
    """Copy block ``b`` of a parameter's saved state into row ``i`` of the bucket."""
    for name, moment in bucket.moments.items():
        moment[i].copy_(old[name][b])
    for name, mats in bucket.matrices.items():
        for dst, src in zip(mats, old[name][b], strict=True):
            if dst is not None:
                dst[i].copy_(src)
    for name, counter in bucket.counters.items():
        value = old[name] if name in PER_PARAM_COUNTERS else old[name][b]
        counter[i].copy_(torch.as_tensor(value))


def grad_blocks(members: list[Member]) -> torch.Tensor:
    """The gradient blocks of ``members`` stacked as ``[B, *shape]`` float32."""
    blocks = []
    for m in members:
        assert m.param.grad is not None
        blocks.append(m.layout.to_merged(m.param.grad)[m.layout.blocks[m.block]])
    return torch.stack(blocks).to(torch.float32)


def apply_update(members: list[Member], delta: torch.Tensor) -> None:
    """``p[block] += delta[i]`` for every member, in the parameter's dtype."""
    delta = delta.to(members[0].param.dtype)
    views, rows = [], []
    for m, row in zip(members, delta.unbind(0), strict=True):
        blocks = m.layout.views_into(m.param.data)
        if blocks is not None:
            views.append(blocks[m.block])
            rows.append(row)
        else:  # layout not expressible as a view (e.g. channels_last + greedy merge): add a full-size update
            full = torch.zeros(m.layout.merged_shape, dtype=row.dtype, device=row.device)
            full[m.layout.blocks[m.block]] = row
            m.param.data.add_(m.layout.from_merged(full))
    if views:
        torch._foreach_add_(views, rows)


def decay_weights(params: list[torch.Tensor], rate: float, keep: torch.Tensor | None) -> None:
    """``p ← p·(1 − rate)`` for every param (a no-op where ``keep`` is false)."""
    if not params:
        return
    torch._foreach_mul_(params, masked(1.0 - rate, keep, 1.0))
