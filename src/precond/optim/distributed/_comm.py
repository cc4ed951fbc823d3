"""The collectives of the sharded step, each one call on a flat buffer (gloo handles uneven and empty splits of
``all_to_all_single``; list collectives with uneven sizes fail on gloo), and the dim-0 shard sizes of FSDP2."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist


def all_gather_flat(out: torch.Tensor, inp: torch.Tensor, group: Any) -> None:
    """``out = cat(inp of rank 0, …, inp of rank W−1)`` for 1-D tensors of equal size on every rank."""
    with warnings.catch_warnings():  # torch 2.13 renames it all_gather_single; older versions lack that name
        warnings.simplefilter("ignore", FutureWarning)
        dist.all_gather_into_tensor(out, inp, group=group)


def all_to_all_flat(
    out: torch.Tensor, inp: torch.Tensor, out_splits: list[int], in_splits: list[int], group: Any
) -> None:
    """Rank ``r`` sends ``inp``'s ``in_splits[s]`` slice to rank ``s`` and receives ``out_splits[s]`` from it."""
    dist.all_to_all_single(out, inp, output_split_sizes=out_splits, input_split_sizes=in_splits, group=group)


def all_reduce_sum(values: torch.Tensor, group: Any) -> None:
    dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)


def shard_rows(rows: int, world_size: int) -> list[int]:
    """Rows of each rank's dim-0 shard under ``torch.chunk`` (FSDP2's rule): ``ceil(rows/W)`` each, the last
    non-empty one shorter, trailing ranks empty."""
    size = -(-rows // world_size) if rows else 0
    return [max(0, min(size, rows - r * size)) for r in range(world_size)]
