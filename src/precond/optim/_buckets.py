"""Batching of same-shaped preconditioner blocks across parameters.

Every parameter is planned into blocks (:func:`precond.linalg.plan_layout`); blocks of one param group with
equal shape, factored dims, device and dtype form a *bucket* whose optimizer state lives in contiguous
``[B, ...]`` tensors, so one batched matmul/QR serves all of them.  Each parameter's entry in
``optimizer.state`` holds *views* into those tensors, so ``state_dict()`` works untouched; after
``load_state_dict`` the buckets are rebuilt and the loaded values copied in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from precond.linalg import BlockLayout


@dataclass
class Member:
    """One block of one parameter."""

    param: torch.Tensor
    block: int
    layout: BlockLayout
    param_view: torch.Tensor | None  # aliases the parameter's memory when the layout allows it


@dataclass
class Bucket:
    """Batched state for ``B`` same-shaped blocks of one param group."""

    group: int
    shape: tuple[int, ...]
    factored: tuple[bool, ...]
    members: list[Member] = field(default_factory=list)
    moments: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, *shape]
    counters: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B]
    matrices: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)  # name -> per dim [B, d, d]

    def runs(self, key: Callable[[Member], object]) -> Iterator[tuple[slice, object]]:
        """Maximal runs of consecutive members with equal ``key`` (``None`` keys are skipped)."""
        start = 0
        while start < len(self.members):
            k = key(self.members[start])
            stop = start + 1
            while stop < len(self.members) and key(self.members[stop]) == k:
                stop += 1
            if k is not None:
                yield slice(start, stop), k
            start = stop

    def sliced(self, sl: slice) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, list]]:
        """Views of all state for the members in ``sl`` (the whole tensors when ``sl`` covers everything)."""
        if sl.start == 0 and sl.stop == len(self.members):
            return self.moments, self.counters, self.matrices
        return (
            {k: v[sl] for k, v in self.moments.items()},
            {k: v[sl] for k, v in self.counters.items()},
            {k: [None if m is None else m[sl] for m in ms] for k, ms in self.matrices.items()},
        )


def build_buckets(
    groups: list[dict],
    plan: Callable[[torch.Tensor, dict], BlockLayout],
    include: Callable[[torch.Tensor], bool],
) -> list[Bucket]:
    """Group the blocks of every parameter that ``include`` accepts into buckets (deterministic order)."""
    buckets: dict[tuple, Bucket] = {}
    for gi, group in enumerate(groups):
        for p in group["params"]:
            if not include(p):
                continue
            layout = plan(p, group)
            views = layout.views_into(p.data)
            for b, (shape, factored) in enumerate(zip(layout.block_shapes, layout.factored, strict=True)):
                key = (gi, shape, factored, p.device)
                bucket = buckets.setdefault(key, Bucket(gi, shape, factored))
                bucket.members.append(Member(p, b, layout, None if views is None else views[b]))
    return list(buckets.values())


def allocate(
    bucket: Bucket,
    moment_names: tuple[str, ...],
    counter_names: dict[str, torch.dtype],
    matrix_kinds: dict[str, str],
) -> None:
    """Zero moments and counters; per factored dim one ``[B, d, d]`` matrix per ``matrix_kinds`` entry,
    starting as zeros (``"zeros"``, e.g. factors) or the identity (``"eye"``, e.g. roots; ``"eye_columns"``: the
    identity stored column-major, e.g. SOAP's bases); float32."""
    n = len(bucket.members)
    device = bucket.members[0].param.device
    for name in moment_names:
        bucket.moments[name] = torch.zeros((n, *bucket.shape), dtype=torch.float32, device=device)
    for name, dtype in counter_names.items():
        bucket.counters[name] = torch.zeros(n, dtype=dtype, device=device)
    for name, kind in matrix_kinds.items():
        mats: list[torch.Tensor | None] = []
        for d, on in zip(bucket.shape, bucket.factored, strict=True):
            if not on:
                mats.append(None)
            elif kind == "eye":
                mats.append(torch.eye(d, dtype=torch.float32, device=device).expand(n, d, d).clone())
            elif kind == "eye_columns":  # stored column-major (LAPACK's layout: QR and eigh results copy in flat)
                eye = torch.eye(d, dtype=torch.float32, device=device).expand(n, d, d)
                mats.append(torch.empty((n, d, d), dtype=torch.float32, device=device).mT.copy_(eye))
            else:
                mats.append(torch.zeros((n, d, d), dtype=torch.float32, device=device))
        bucket.matrices[name] = mats
