"""The skeleton of the optimizers that treat weight matrices one way and everything else as AdamW (Conda,
DCT-AdamW, Trion, FISMO, AuON): name routing, matrix views and buckets, the host-checked non-finite skip of
steps that decompose a matrix, and the AdamW part (:func:`precond.optim.muon.adamw_step_`, bitwise
``torch.optim.AdamW`` for float32 parameters).

Routing follows :class:`precond.optim.Muon`: a group's ``matrix`` key decides (``True``: every param is a
matrix, ``False``: every param is AdamW, ``None``: automatic, :func:`precond.optim.muon.uses_muon` — ``ndim >= 2``
and, when names are known, not an embedding or output head).  Params may be given as ``(name, tensor)`` pairs,
or as an ``nn.Module`` (its named parameters).
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from precond.optim._common import (
    PrecondOptimizer,
    check_betas,
    check_real,
    masked,
    state_dtype,
)
from precond.optim.muon import adamw_step_, check_matrices, route_by_name, split_names

Groups = list[tuple[dict[str, Any], list[torch.Tensor]]]


def matrix_shape(p: torch.Tensor) -> tuple[int, int]:
    """The 2-D view ``[shape[0], prod(rest)]`` of a parameter (conv kernels as ``[out, in·kh·kw]``)."""
    return p.shape[0], p[0].numel()


def bucket_by_shape(params: list[torch.Tensor], extra: Any = None) -> dict[tuple, list[int]]:
    """Indices of ``params`` grouped by (matrix view, dtype, device, ``extra(i)``): one batched call each."""
    out: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        out.setdefault((matrix_shape(p), p.dtype, p.device, None if extra is None else extra(i)), []).append(i)
    return out


def stack_as(tensors: list[torch.Tensor], rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, rows, cols]`` copy of ``tensors`` (each reshaped to its matrix view) in ``dtype``."""
    return torch.stack([t.reshape(rows, cols) for t in tensors]).to(dtype)


def write_back_(dsts: list[torch.Tensor], stacked: torch.Tensor) -> None:
    """Copy the rows of ``stacked`` ``[B, ...]`` into ``dsts`` (each in its own shape)."""
    torch._foreach_copy_(dsts, [row.view(d.shape) for row, d in zip(stacked.unbind(0), dsts, strict=True)])


def apply_matrix_update_(
    params: list[torch.Tensor],
    delta: torch.Tensor,
    *,
    decay: float,
    keep: torch.Tensor | None,
) -> None:
    """``p ← p·decay + delta`` (``delta`` ``[B, rows, cols]`` in the state dtype, already masked by the caller;
    the decay is masked here), in the state dtype and rounded once into bf16/fp16 parameters."""
    sdt = delta.dtype
    updates = [d.view(p.shape) for d, p in zip(delta.unbind(0), params, strict=True)]
    targets = params if params[0].dtype == sdt else [p.to(sdt) for p in params]
    if decay != 1.0:
        torch._foreach_mul_(targets, masked(decay, keep, 1.0, sdt))
    torch._foreach_add_(targets, updates)
    if targets is not params:
        torch._foreach_copy_(params, targets)


def zeroed(g: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``g`` on a kept step, zeros on a skipped one (a skipped step must not see inf/NaN: ``0·inf = NaN``)."""
    return g if keep is None else torch.where(keep, g, 0.0)


def matrix_zeros(p: torch.Tensor) -> torch.Tensor:
    """Zeros in the matrix view of ``p`` and its state dtype (a momentum buffer, an error accumulator)."""
    return torch.zeros(matrix_shape(p), dtype=state_dtype(p), device=p.device)


class MatrixBatch(NamedTuple):
    """Matrices of one group stepped by one batched call (same view, dtype, device, refresh flag)."""

    params: list[torch.Tensor]
    states: list[dict[str, Any]]
    refresh: bool

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params]  # type: ignore[misc]

    def lists(self, *keys: str) -> list[list[torch.Tensor]]:
        """``[s[key] for s in states]`` for each of ``keys``."""
        return [[s[key] for s in self.states] for key in keys]


class HybridOptimizer(PrecondOptimizer):
    """Base of the matrix-or-AdamW optimizers (see the module docstring).

    Subclasses implement ``_validate_matrix_group``, ``_init_matrix_state`` and ``_step_batch`` (one call on a
    :class:`MatrixBatch`; it may return the per-member count of failed decompositions, added to
    ``state[p][fallback_key]``), and set:

    * ``refresh_key``: the group key of the period of refresh steps (steps ``1, T + 1, 2T + 1, …`` of each
      matrix; ``None``: no refresh schedule, the flag is always false);
    * ``refresh_syncs``: a refresh decomposes a matrix (``svd``/``eigh`` is not maskable, so the finiteness
      flag is read on the host there and a bad step is skipped before anything changes);
    * ``fallback_key``: the int64 counter of failed decompositions in the state of a matrix (or ``None``);
    * ``shares_adam_settings``: the AdamW part runs with the matrices' ``lr, betas, eps, weight_decay``
      (default: the ``adam_*`` keys and ``lr · adam_lr_ratio``).

    ``state[p]["calls"]`` (an ``int``) counts the matrix steps of ``p`` and drives schedules;
    ``nonfinite_skips`` counts skipped steps of every param.
    """

    refresh_key: ClassVar[str | None] = None
    refresh_syncs: ClassVar[bool] = False
    fallback_key: ClassVar[str | None] = None
    shares_adam_settings: ClassVar[bool] = False

    def __init__(
        self,
        params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        defaults: dict[str, Any],
        nonfinite: str = "skip",
    ) -> None:
        if isinstance(params, nn.Module):
            params = [{"params": list(params.named_parameters())}]
        super().__init__(params, {**defaults, "matrix": None}, nonfinite)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _validate_matrix_group(self, group: dict[str, Any], where: str) -> None:
        """Check the matrix part's hyperparameters (``ValueError`` naming the argument)."""

    @abstractmethod
    def _init_matrix_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """Fill ``state`` (empty but for ``calls``) for matrix ``p``."""

    @abstractmethod
    def _step_batch(self, group: dict[str, Any], batch: MatrixBatch, keep: torch.Tensor | None) -> torch.Tensor | None:
        """One step of ``batch``, matrices of ``group`` (``keep`` as :func:`precond.optim._common.masked`)."""

    def _refreshes(self, p: torch.Tensor, group: dict[str, Any]) -> bool:
        return self.refresh_key is not None and self.state[p]["calls"] % group[self.refresh_key] == 0

    def _needs_host_check(self, group: dict[str, Any], params: list[torch.Tensor]) -> bool:
        return self.refresh_syncs and any(self._refreshes(p, group) for p in params)

    def _adam_settings(self, group: dict[str, Any]) -> tuple[float, tuple[float, float], float, float]:
        if self.shares_adam_settings:
            return group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"]
        ratio = group["adam_lr_ratio"]
        return group["lr"] * ratio, tuple(group["adam_betas"]), group["adam_eps"], group["adam_weight_decay"]

    # ------------------------------------------------------------------ plumbing
    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        self._validate_matrix_group(group, where)
        if "adam_betas" in group:
            check_real(group, "adam_lr_ratio", where, low=0.0)
            check_betas(group, where, name="adam_betas")
            check_real(group, "adam_eps", where, low=0.0, low_open=True)
            check_real(group, "adam_weight_decay", where, low=0.0)
        if group.get("matrix") not in (None, True, False):
            raise ValueError(f"{where}: invalid matrix={group['matrix']!r}: must be True, False or None (auto)")
        check_matrices(group, where, "matrix", "the matrix update")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(split_names(param_group, self.optimizer_name))

    def routes(self, group: dict[str, Any], params: list[torch.Tensor]) -> list[bool]:
        """Whether each of ``params`` (of ``group``) gets the matrix update."""
        return route_by_name(group, params, group["matrix"])

    def _init(self, p: torch.Tensor, group: dict[str, Any], route: bool) -> None:
        state = self.state[p]
        if ("calls" in state) == route and (route or "exp_avg_sq" in state):
            return
        state.clear()  # new, or the routing of this param changed: start its new state afresh
        if route:
            state["calls"] = 0
            self._init_matrix_state(p, group, state)
            if self.fallback_key is not None:
                state[self.fallback_key] = torch.zeros((), dtype=torch.int64, device=p.device)
        else:
            zeros = functools.partial(torch.zeros, p.shape, dtype=state_dtype(p), device=p.device)
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = zeros()
            state["exp_avg_sq"] = zeros()
        state["nonfinite_skips"] = torch.zeros((), dtype=torch.int64, device=p.device)

    def _matrix_step(self, group: dict[str, Any], params: list[torch.Tensor], keep: torch.Tensor | None) -> None:
        key = None if self.refresh_key is None else (lambda i: self._refreshes(params[i], group))
        for (_, _, _, refresh), idx in bucket_by_shape(params, key).items():
            ps = [params[i] for i in idx]
            states = [self.state[p] for p in ps]
            failed = self._step_batch(group, MatrixBatch(ps, states, bool(refresh)), keep)
            if failed is not None and self.fallback_key is not None:
                counters = [s[self.fallback_key] for s in states]
                torch._foreach_add_(counters, list(failed.to(torch.int64).unbind(0)))

    def _step_groups(self, groups: Groups, ok: torch.Tensor | None) -> None:
        split = []
        for group, ps in groups:
            mats: list[torch.Tensor] = []
            rest: list[torch.Tensor] = []
            for p, route in zip(ps, self.routes(group, ps), strict=True):
                self._init(p, group, route)
                (mats if route else rest).append(p)
            split.append((group, mats, rest))
        counters = [self.state[p]["nonfinite_skips"] for _, ps in groups for p in ps]
        if ok is not None and any(mats and self._needs_host_check(g, mats) for g, mats, _ in split):
            # svd/eigh cannot be masked: read the flag on the host; a skipped step changes nothing but the counters
            if not bool(ok):
                torch._foreach_add_(counters, 1)
                return
            ok = None
        for group, mats, rest in split:
            if mats:
                self._matrix_step(group, mats, ok)
                for p in mats:
                    self.state[p]["calls"] += 1
            if rest:
                lr, betas, eps, wd = self._adam_settings(group)
                states = [self.state[p] for p in rest]
                adamw_step_(
                    rest,
                    [p.grad for p in rest],  # type: ignore[misc]
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [s["step"] for s in states],
                    lr=lr,
                    betas=betas,
                    eps=eps,
                    weight_decay=wd,
                    keep=ok,
                )
        self._count_skips(counters, ok)


def adam_hyperparameters(
    adam_lr_ratio: float, adam_betas: tuple[float, float], adam_eps: float, adam_weight_decay: float
) -> dict[str, Any]:
    """The ``adam_*`` defaults of a hybrid optimizer whose AdamW part has its own hyperparameters."""
    return dict(
        adam_lr_ratio=adam_lr_ratio, adam_betas=adam_betas, adam_eps=adam_eps, adam_weight_decay=adam_weight_decay
    )
