"""``ShardedOptimizer``: SOAP, Shampoo or Muon with each parameter's preconditioner owned by one rank.

Design (background and figures: ``docs/distributed.md``):

* **Ownership.** Every parameter is owned by one rank of the process group, assigned once at construction by
  :func:`~precond.optim.distributed._plan.assign_owners` (greedy LPT) from shape-only costs
  (``_work_estimate``).  The owner keeps the parameter's whole state (all its blocks) and runs the
  single-process math on it; the other ranks keep ``{}`` for it.  Owners batch their same-shaped blocks as the
  single-process optimizer does.  The unit is the whole parameter, not the block: a checkpoint then has the
  single-process state layout, so it loads at any world size, 1 included.
* **Replicated parameters (DDP).** Gradients are the same on every rank (DDP has averaged them).  After the
  owners' step, one ``all_gather`` per param group brings every owner's updated parameters to every rank
  (default, bitwise the single-process result), or their updates in ``communication_dtype`` (e.g. bf16), which
  every rank, the owner included, adds to the old values so the replicas stay identical.
* **FSDP2 parameters** (``fully_shard``: DTensors, ``Shard(0)`` on a 1-D mesh).  Per param group one
  ``all_to_all_single`` sends each rank's gradient and parameter shards of every parameter to its owner (uneven
  and empty shards included), the owner runs the single-process math on the whole matrix, and a second
  ``all_to_all_single`` returns the new parameter shards: exactly the single-process step.
* **One global decision per step.** Before any state changes, one ``all_reduce`` sums, over the ranks, the
  non-finite flags of the gradients each rank holds, whether a host-checked phase (eigh/QR refresh) is due, and
  which parameters have gradients.  Every rank then takes the same branch (raise, skip, step), and a gradient
  present on some ranks only is a ``ValueError`` on every rank instead of a hang.
* **Checkpoints.** State exists for every parameter on every rank from construction (owners: the full state;
  others: ``{}``), so ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` never takes its
  dummy step, and each state tensor is written once, by its owner.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.optim import Optimizer

from precond.optim._common import PrecondOptimizer, nonfinite_flag, state_dtype
from precond.optim._factored import FactoredOptimizer
from precond.optim.distributed._comm import all_gather_flat, all_reduce_sum, all_to_all_flat, shard_rows
from precond.optim.distributed._plan import assign_owners
from precond.optim.muon import Muon

SUPPORTED = (FactoredOptimizer, Muon)
COMMUNICATION_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)
COSTS = ("flops", "numel")
_NAMED = ("params", "param_names")


def _is_dtensor(p: torch.Tensor) -> bool:
    return type(p).__name__ == "DTensor" and hasattr(p, "device_mesh") and hasattr(p, "to_local")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if _is_dtensor(t) else t  # type: ignore[attr-defined]


class ShardedOptimizer(Optimizer):
    """``optimizer`` (SOAP, Shampoo or Muon) over ``params`` with its work sharded across ``process_group``.

    Construct it on every rank with the same arguments, after ``torch.distributed.init_process_group`` (and
    after ``fully_shard`` for FSDP2 models)::

        opt = ShardedOptimizer(SOAP, model.parameters(), lr=3e-3)          # DDP: grads already averaged
        opt = ShardedOptimizer(Muon, fsdp_model.named_parameters())         # FSDP2 (DTensor) parameters

    Args:
        optimizer: the class, :class:`~precond.optim.SOAP`, :class:`~precond.optim.Shampoo` or
            :class:`~precond.optim.Muon` (or a subclass).
        params: as for ``optimizer``; all plain tensors (replicated, e.g. under DDP: every rank must hold the
            same gradients) or all DTensors sharded by ``fully_shard`` on one 1-D mesh.
        process_group: the ranks that share the work (default: the FSDP2 mesh's group, else the world; without
            an initialized ``torch.distributed`` the optimizer runs alone, world size 1).
        communication_dtype: replicated parameters only.  ``None`` (default): exchange the updated parameters
            exactly (float32, float64 for float64 params; the result is bitwise the single-process one).  A
            float dtype (``torch.bfloat16`` halves the bytes): exchange the updates in it.
        cost: what the ownership plan balances: ``"flops"`` (default; per-step matmuls plus amortized
            refreshes for SOAP/Shampoo, Newton–Schulz for Muon) or ``"numel"`` (state size).
        **hyperparameters: passed to ``optimizer`` (``lr``, ``betas``, ``nonfinite``, ...).

    Raises:
        TypeError: ``optimizer`` is not a supported class.
        ValueError: a bad ``communication_dtype``/``cost``, parameters mixing DTensors and plain tensors,
            DTensors not ``Shard(0)`` on a 1-D mesh, a ``process_group`` other than the FSDP2 mesh's, and at
            ``step`` a gradient present on some ranks only or a change of param groups.
    """

    def __init__(
        self,
        optimizer: type[PrecondOptimizer],
        params: Iterable[Any],
        *,
        process_group: Any = None,
        communication_dtype: torch.dtype | None = None,
        cost: str = "flops",
        **hyperparameters: Any,
    ) -> None:
        if not (isinstance(optimizer, type) and issubclass(optimizer, SUPPORTED)):
            raise TypeError(f"ShardedOptimizer: optimizer must be SOAP, Shampoo or Muon (the class), got {optimizer!r}")
        if communication_dtype not in COMMUNICATION_DTYPES:
            raise ValueError(
                f"ShardedOptimizer: invalid communication_dtype={communication_dtype!r}: must be None (exact), "
                "torch.float32, torch.bfloat16 or torch.float16"
            )
        if cost not in COSTS:
            raise ValueError(f"ShardedOptimizer: invalid cost={cost!r}: must be 'flops' or 'numel'")
        self._reference = optimizer(params, **hyperparameters)  # validates and normalises the param groups
        self._cls = optimizer
        self._hyperparameters = hyperparameters
        self._comm_dtype = communication_dtype
        self._nonfinite: str = self._reference._nonfinite
        self._building = True
        super().__init__(self._reference.param_groups, self._reference.defaults)
        self._building = False

        everything = [p for g in self.param_groups for p in g["params"]]
        kinds = {_is_dtensor(p) for p in everything}
        if len(kinds) > 1:
            raise ValueError(
                "ShardedOptimizer: the parameters mix DTensors (FSDP2 fully_shard) and plain tensors (replicated/DDP);"
                " shard the whole model with fully_shard, or use one ShardedOptimizer per kind"
            )
        self._fsdp = kinds == {True}
        if process_group is not None and not self._distributed:
            raise ValueError(
                "ShardedOptimizer: process_group was given but torch.distributed is not initialized; call "
                "torch.distributed.init_process_group first (or leave process_group None to run alone)"
            )
        self._group = self._resolve_group(everything, process_group)
        self._world = dist.get_world_size(self._group) if self._distributed else 1
        self._rank = dist.get_rank(self._group) if self._distributed else 0
        if self._fsdp and communication_dtype is not None:
            raise ValueError(
                "ShardedOptimizer: communication_dtype applies to replicated (DDP) parameters only; FSDP2 "
                "parameters are always routed exactly"
            )

        costs = []
        for g in self.param_groups:
            for p in g["params"]:
                costs.append(self._reference._work_estimate(p, g) if cost == "flops" else float(p.numel()))
        flat_owners = assign_owners(costs, self._world)
        self._owner: dict[torch.Tensor, int] = dict(zip(everything, flat_owners, strict=True))
        del self._reference  # only its normalised groups were needed

        # the tensors the inner optimizer steps: the parameters themselves, or (FSDP2) full-size replicas
        self._inner_of: dict[torch.Tensor, torch.Tensor] = {}
        inner_groups = []
        for g in self.param_groups:
            tensors = []
            names = []
            for i, p in enumerate(g["params"]):
                if self._owner[p] != self._rank:
                    continue
                t = p
                if self._fsdp:
                    t = torch.zeros(p.shape, dtype=p.dtype, device=_local(p).device).requires_grad_(p.requires_grad)
                self._inner_of[p] = t
                tensors.append(t)
                if "param_names" in g:
                    names.append(g["param_names"][i])
            inner = {k: v for k, v in g.items() if k not in _NAMED}
            inner["params"] = list(zip(names, tensors, strict=True)) if "param_names" in g else tensors
            inner_groups.append(inner)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Muon's "nothing routed to Muon" on a rank owning only vectors
            self._inner = optimizer(inner_groups, **hyperparameters)
        self._inner._create_state()
        self._sync_state()

    # ------------------------------------------------------------------ set-up helpers
    @property
    def _distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def _resolve_group(self, params: list[torch.Tensor], process_group: Any) -> Any:
        if not self._fsdp:
            return process_group
        meshes = {id(p.device_mesh): p.device_mesh for p in params}  # type: ignore[attr-defined]
        if len(meshes) != 1:
            raise ValueError("ShardedOptimizer: the FSDP2 parameters live on different device meshes; use one mesh")
        (mesh,) = meshes.values()
        if mesh.ndim != 1:
            raise ValueError(
                f"ShardedOptimizer: FSDP2 parameters on a {mesh.ndim}-D mesh (HSDP) are not supported; use a 1-D mesh"
            )
        for p in params:
            placements = tuple(p.placements)  # type: ignore[attr-defined]
            if len(placements) != 1 or not placements[0].is_shard(0):
                raise ValueError(
                    f"ShardedOptimizer: a DTensor parameter has placements {placements}; only Shard(0) "
                    "(fully_shard's default) is supported"
                )
        group = mesh.get_group(0)
        if process_group is not None and dist.get_process_group_ranks(process_group) != dist.get_process_group_ranks(
            group
        ):
            raise ValueError(
                "ShardedOptimizer: process_group differs from the FSDP2 mesh's group; leave it None for FSDP2"
            )
        return group

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not getattr(self, "_building", False):
            raise ValueError(
                "ShardedOptimizer: param groups are fixed at construction (ownership is planned once); "
                "build a new ShardedOptimizer with all param groups instead"
            )
        super().add_param_group(param_group)

    def owner(self, p: torch.Tensor) -> int:
        """The rank (in the process group) that owns ``p``'s preconditioner."""
        return self._owner[p]

    def _sync_state(self) -> None:
        """Point ``self.state`` at the inner optimizer's state (``{}`` for parameters owned elsewhere)."""
        state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        for g in self.param_groups:
            for p in g["params"]:
                inner = self._inner_of.get(p)
                state[p] = self._inner.state[inner] if inner is not None and inner in self._inner.state else {}
        self.state = state

    def _sync_hyperparameters(self) -> None:
        for outer, inner in zip(self.param_groups, self._inner.param_groups, strict=True):
            for key, value in outer.items():
                if key not in _NAMED:
                    inner[key] = value

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step on every rank (call it on all ranks, also on those that own nothing)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_hyperparameters()
        params = [p for g in self.param_groups for p in g["params"]]
        has = [p.grad is not None and p.numel() > 0 for p in params]
        for p, h in zip(params, has, strict=True):
            if h and p.grad.is_sparse:
                raise ValueError(f"{self._cls.optimizer_name} does not support sparse gradients")
        # every gradient this rank holds (FSDP2: its shards); replicated gradients are checked on every rank, so
        # a replica that diverged (e.g. an inf on one rank only) still makes every rank take the same branch
        mine = [_local(p.grad) for p, h in zip(params, has, strict=True) if h]
        bad = self._nonfinite != "off" and bool(mine) and not bool(nonfinite_flag(mine, "skip"))
        groups = self._inner_groups_with(has)
        due = self._inner._host_check_due(groups)
        device = _local(params[0]).device if params else torch.device("cpu")  # NCCL reduces device tensors
        votes = torch.tensor([int(bad), int(due), *map(int, has)], dtype=torch.int64, device=device)
        if self._distributed and self._world > 1:
            all_reduce_sum(votes, self._group)
        votes = votes.cpu()
        partial = [i for i, n in enumerate(votes[2:].tolist()) if n not in (0, self._world)]
        if partial:
            raise ValueError(
                f"ShardedOptimizer: parameter(s) {partial} (flat index over the param groups) have a gradient on "
                "some ranks only; every rank must hold gradients for the same parameters (DDP/FSDP2 do this; "
                "zero the gradients of unused parameters instead of leaving them None)"
            )
        bad, due = bool(votes[0] > 0), bool(votes[1] > 0)
        if bad and self._nonfinite == "raise":
            raise ValueError(
                "non-finite (or overflowing) gradient on some rank; the optimizer state was not modified. "
                "Use nonfinite='skip' to skip such steps, or clip/scale the loss."
            )
        if bad and due:  # a refresh was due: the whole step is skipped on the host, as in one process
            if self._fsdp:
                for _, ts in groups:
                    for t in ts:
                        t.grad = torch.empty_like(t)  # only its presence is read
            self._inner._count_host_skip()
            self._clear_inner_grads()
            return loss
        # the vote is already on the host: a finite step takes the unmasked path, a skipped one the masked no-op
        ok = torch.tensor(False, device=device) if bad else None
        if self._fsdp:
            for gi in range(len(self.param_groups)):
                self._gather_to_owners(gi, has)
        else:
            old = self._snapshot(has) if self._comm_dtype is not None else {}
        self._inner._check_step(groups)
        if any(ts for _, ts in groups):
            self._inner._step_groups(groups, ok)
        for gi in range(len(self.param_groups)):
            if self._fsdp:
                self._return_shards(gi, has)
            else:
                self._exchange_replicated(gi, has, old)
        self._clear_inner_grads()
        self._sync_state()
        return loss

    def _inner_groups_with(self, has: list[bool]) -> list[tuple[dict[str, Any], list[torch.Tensor]]]:
        """The inner optimizer's ``(group, tensors with a gradient)``, presence taken from the real params."""
        it = iter(has)
        out = []
        for outer, inner in zip(self.param_groups, self._inner.param_groups, strict=True):
            flags = [next(it) for _ in outer["params"]]
            out.append(
                (
                    inner,
                    [
                        self._inner_of[p]
                        for p, h in zip(outer["params"], flags, strict=True)
                        if h and p in self._inner_of
                    ],
                )
            )
        return out

    def _clear_inner_grads(self) -> None:
        if self._fsdp:
            for t in self._inner_of.values():
                t.grad = None

    def _flags_of(self, gi: int, has: list[bool]) -> list[bool]:
        start = sum(len(g["params"]) for g in self.param_groups[:gi])
        return has[start : start + len(self.param_groups[gi]["params"])]

    def _buffer_dtype(self, params: list[torch.Tensor]) -> torch.dtype:
        return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32

    # ------------------------------------------------------------------ replicated (DDP) exchange
    def _snapshot(self, has: list[bool]) -> dict[torch.Tensor, torch.Tensor]:
        params = [p for g in self.param_groups for p in g["params"]]
        return {p: p.detach().clone() for p, h in zip(params, has, strict=True) if h and self._owner[p] == self._rank}

    def _exchange_replicated(self, gi: int, has: list[bool], old: dict[torch.Tensor, torch.Tensor]) -> None:
        params = self.param_groups[gi]["params"]
        flags = self._flags_of(gi, has)
        if self._world == 1 or not any(flags):
            return
        per_rank: list[list[tuple[torch.Tensor, bool]]] = [[] for _ in range(self._world)]
        for p, h in zip(params, flags, strict=True):
            per_rank[self._owner[p]].append((p, h))
        length = max(sum(p.numel() for p, _ in owned) for owned in per_rank)
        dtype = self._comm_dtype or self._buffer_dtype(params)
        send = torch.zeros(length, dtype=dtype, device=_local(params[0]).device)
        offset = 0
        for p, h in per_rank[self._rank]:
            n = p.numel()
            if h:
                value = p.detach() - old[p] if self._comm_dtype is not None else p.detach()
                send[offset : offset + n].copy_(value.reshape(-1))
            offset += n
        recv = torch.empty(length * self._world, dtype=dtype, device=send.device)
        all_gather_flat(recv, send, self._group)
        for rank, owned in enumerate(per_rank):
            if rank == self._rank and self._comm_dtype is None:
                continue  # the owner already holds the exact values
            segment = recv[rank * length : (rank + 1) * length]
            offset = 0
            for p, h in owned:
                n = p.numel()
                if h:
                    piece = segment[offset : offset + n].view(p.shape)
                    if self._comm_dtype is None:
                        p.copy_(piece)
                    else:  # every rank, the owner too, adds the rounded update to the same old values
                        base = old[p] if rank == self._rank else p.detach()
                        sdt = state_dtype(p)
                        p.copy_(base.to(sdt) + piece.to(sdt))
                offset += n

    # ------------------------------------------------------------------ FSDP2 routing
    def _routed(self, gi: int, has: list[bool]) -> list[tuple[torch.Tensor, list[int], int]]:
        """``(param, rows of each rank's shard, row width)`` of group ``gi``'s params with a gradient."""
        out = []
        for p, h in zip(self.param_groups[gi]["params"], self._flags_of(gi, has), strict=True):
            if not h:
                continue
            rows = shard_rows(p.shape[0], self._world)
            local = _local(p)
            if local.shape[0] != rows[self._rank]:
                raise ValueError(
                    f"ShardedOptimizer: a parameter of shape {tuple(p.shape)} has a local shard of {local.shape[0]} "
                    f"rows on rank {self._rank}, not torch.chunk's {rows[self._rank]}; only fully_shard's dim-0 "
                    "sharding is supported"
                )
            out.append((p, rows, math.prod(p.shape[1:])))
        return out

    def _gather_to_owners(self, gi: int, has: list[bool]) -> None:
        """Send each gradient and parameter shard to the parameter's owner; the owner assembles both."""
        routed = self._routed(gi, has)
        if not routed:
            return
        dtype = self._buffer_dtype([p for p, _, _ in routed])
        device = _local(routed[0][0]).device
        pieces: list[list[torch.Tensor]] = [[] for _ in range(self._world)]
        for p, _, _ in routed:
            pieces[self._owner[p]] += [_local(p.grad).reshape(-1), _local(p).detach().reshape(-1)]  # type: ignore[arg-type]
        in_splits = [sum(t.numel() for t in ts) for ts in pieces]
        send = (
            torch.cat([t.to(dtype) for ts in pieces for t in ts])
            if any(in_splits)
            else torch.zeros(0, dtype=dtype, device=device)
        )
        mine = [(p, rows, width) for p, rows, width in routed if self._owner[p] == self._rank]
        out_splits = [sum(2 * rows[s] * width for _, rows, width in mine) for s in range(self._world)]
        recv = torch.empty(sum(out_splits), dtype=dtype, device=device)
        all_to_all_flat(recv, send.to(device), out_splits, in_splits, self._group)
        grads: dict[torch.Tensor, list[torch.Tensor]] = {p: [] for p, _, _ in mine}
        values: dict[torch.Tensor, list[torch.Tensor]] = {p: [] for p, _, _ in mine}
        offset = 0
        for s in range(self._world):
            for p, rows, width in mine:
                n = rows[s] * width
                grads[p].append(recv[offset : offset + n])
                values[p].append(recv[offset + n : offset + 2 * n])
                offset += 2 * n
        for p, _, _ in mine:
            t = self._inner_of[p]
            t.copy_(torch.cat(values[p]).view(t.shape))
            t.grad = torch.cat(grads[p]).view(t.shape).to(p.dtype)

    def _return_shards(self, gi: int, has: list[bool]) -> None:
        """Send each updated parameter's row shards from its owner back to the ranks that hold them."""
        routed = self._routed(gi, has)
        if not routed:
            return
        dtype = self._buffer_dtype([p for p, _, _ in routed])
        device = _local(routed[0][0]).device
        mine = [(p, rows, width) for p, rows, width in routed if self._owner[p] == self._rank]
        pieces: list[list[torch.Tensor]] = [[] for _ in range(self._world)]
        for p, rows, _ in mine:
            full = self._inner_of[p].detach()
            start = 0
            for s in range(self._world):
                pieces[s].append(full[start : start + rows[s]].reshape(-1))
                start += rows[s]
        in_splits = [sum(t.numel() for t in ts) for ts in pieces]
        send = (
            torch.cat([t.to(dtype) for ts in pieces for t in ts])
            if any(in_splits)
            else torch.zeros(0, dtype=dtype, device=device)
        )
        out_splits = [
            sum(rows[self._rank] * width for p, rows, width in routed if self._owner[p] == s)
            for s in range(self._world)
        ]
        recv = torch.empty(sum(out_splits), dtype=dtype, device=device)
        all_to_all_flat(recv, send.to(device), out_splits, in_splits, self._group)
        offsets = [sum(out_splits[:s]) for s in range(self._world)]
        for p, rows, width in routed:
            s = self._owner[p]
            n = rows[self._rank] * width
            local = _local(p)
            local.copy_(recv[offsets[s] : offsets[s] + n].view(local.shape))
            offsets[s] += n

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        self._sync_state()
        out = super().state_dict()
        inner = self._inner.state_dict()
        for key, value in inner.items():
            if key not in ("state", "param_groups"):
                out[key] = value  # e.g. SOAP/Shampoo's data_format
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this optimizer at any world size, or of the single-process ``optimizer``
        (``get_optimizer_state_dict``/``set_optimizer_state_dict`` call this with the checkpoint's values)."""
        if not (isinstance(state_dict, dict) and "state" in state_dict and "param_groups" in state_dict):
            raise TypeError("ShardedOptimizer.load_state_dict: expected the dict returned by state_dict()")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups, strict=True)
        ):
            raise ValueError(
                "ShardedOptimizer.load_state_dict: the saved param groups do not match this optimizer's "
                "(number of groups or of parameters per group)"
            )
        saved_state = state_dict["state"]
        inner_state: dict[int, Any] = {}
        inner_groups = []
        index = 0
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            ids = []
            names = []
            for i, (key, p) in enumerate(zip(saved["params"], group["params"], strict=True)):
                if p not in self._inner_of:
                    continue
                if saved_state.get(key):
                    inner_state[index] = saved_state[key]
                ids.append(index)
                if "param_names" in group:
                    names.append(group["param_names"][i])
                index += 1
            inner = {k: v for k, v in saved.items() if k not in _NAMED}
            inner["params"] = ids
            if "param_names" in group:
                inner["param_names"] = names
            inner_groups.append(inner)
            for key, value in saved.items():
                if key not in _NAMED:
                    group[key] = value
        extra = {k: v for k, v in state_dict.items() if k not in ("state", "param_groups")}
        self._inner.load_state_dict({"state": inner_state, "param_groups": inner_groups, **extra})
        self._inner._create_state()  # parameters the checkpoint had no state for start afresh
        self._sync_state()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("ShardedOptimizer cannot be copied or pickled (it holds a process group); save state_dict()")
