"""How a parameter of any shape is viewed for Kronecker-factored preconditioning.

A parameter is (1) optionally permuted (``channels_last`` 4-D tensors), (2) reshaped by merging dimensions,
and (3) cut into blocks of at most ``max_precond_dim`` along every dimension that is larger.  Each block gets
one factor per dimension whose size is at most ``max_precond_dim``.  Blocking follows Distributed Shampoo's
"block partitioning" (Shi et al. 2023, arXiv 2309.06497, §3.2); the fan-out/fan-in merge of conv kernels
(``[out, in*kh*kw]``) follows the common practice of treating a kernel as a matrix.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch

MergeRule = Literal["fan_in", "greedy", "none"]


def merge_greedy(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """Multiply consecutive dims while the product stays ``<= max_dim`` (the SOAP reference's rule)."""
    merged: list[int] = []
    current = 1
    for size in shape:
        if current * size > max_dim:
            if current > 1:
                merged.append(current)
                current = size
            else:
                merged.append(size)
                current = 1
        else:
            current *= size
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


def _balanced_chunks(size: int, max_dim: int) -> list[slice]:
    """Split ``range(size)`` into the fewest chunks of at most ``max_dim``, sizes differing by at most one."""
    count = math.ceil(size / max_dim)
    base, extra = divmod(size, count)
    slices, start = [], 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        slices.append(slice(start, stop))
        start = stop
    return slices


@dataclass(frozen=True)
class BlockLayout:
    """The preconditioning view of one tensor: permutation, merged shape, blocks and factored dims."""

    shape: tuple[int, ...]
    permutation: tuple[int, ...] | None
    merged_shape: tuple[int, ...]
    blocks: tuple[tuple[slice, ...], ...]
    factored: tuple[tuple[bool, ...], ...]

    @property
    def block_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(s.stop - s.start for s in block) for block in self.blocks)

    def to_merged(self, x: torch.Tensor) -> torch.Tensor:
        """View (or, for non-viewable layouts, copy) ``x`` in the merged shape."""
        if self.permutation is not None:
            x = x.permute(self.permutation)
        return x.reshape(self.merged_shape)

    def from_merged(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_merged` (returns a tensor of :attr:`shape`)."""
        if self.permutation is None:
            return x.reshape(self.shape)
        permuted_shape = tuple(self.shape[i] for i in self.permutation)
        inverse = tuple(sorted(range(len(self.permutation)), key=self.permutation.__getitem__))
        return x.reshape(permuted_shape).permute(inverse)

    def split(self, merged: torch.Tensor) -> list[torch.Tensor]:
        """The blocks of a merged tensor, as views."""
        return [merged[block] for block in self.blocks]

    def views_into(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """Block views that alias ``x``'s memory, or ``None`` when the merged shape cannot be a view."""
        if self.permutation is not None:
            x = x.permute(self.permutation)
        try:
            merged = x.view(self.merged_shape)
        except RuntimeError:
            return None
        return self.split(merged)


def plan_layout(
    shape: tuple[int, ...] | torch.Size,
    max_precond_dim: int,
    *,
    merge: MergeRule = "fan_in",
    blocking: bool = True,
    precondition_1d: bool = False,
    channels_last: bool = False,
) -> BlockLayout:
    """Plan how a tensor of ``shape`` is merged, blocked and factored.

    - 0-d tensors become ``(1,)``; 1-d tensors get a factor only with ``precondition_1d``.
    - ``merge="fan_in"`` views a tensor of 3+ dims as ``[shape[0], prod(shape[1:])]`` (conv kernels as
      ``[out, in*kh*kw]``); ``"greedy"`` is the SOAP reference's consecutive-product rule; ``"none"`` keeps dims.
    - Dims larger than ``max_precond_dim`` are cut into balanced blocks when ``blocking`` (each block factored),
      else left unfactored (identity on that side).  ``max_precond_dim=0`` means no factors at all (Adam).
    """
    shape = tuple(int(s) for s in shape)
    permutation = None
    if len(shape) == 0:
        merged: tuple[int, ...] = (1,)
    elif len(shape) == 1:
        merged = shape
    else:
        if channels_last and len(shape) == 4 and merge == "greedy":
            permutation = (0, 3, 1, 2)
        work = tuple(shape[i] for i in permutation) if permutation else shape
        if merge == "fan_in" and len(work) > 2:
            merged = (work[0], math.prod(work[1:]))
        elif merge == "greedy":
            merged = merge_greedy(work, max_precond_dim)
        else:
            merged = work

    wants_factors = max_precond_dim > 0 and (len(shape) >= 2 or precondition_1d)
    per_dim: list[list[slice]] = []
    for size in merged:
        if wants_factors and blocking and size > max_precond_dim:
            per_dim.append(_balanced_chunks(size, max_precond_dim))
        else:
            per_dim.append([slice(0, size)])
    blocks = tuple(itertools.product(*per_dim))
    factored = tuple(tuple(wants_factors and (s.stop - s.start) <= max_precond_dim for s in block) for block in blocks)
    return BlockLayout(shape, permutation, merged, blocks, factored)
