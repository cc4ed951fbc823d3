"""Which rank owns which parameter: greedy longest-processing-time-first on a shape-only cost.

The rule of Distributed Shampoo's ``distribute_buffer_sizes`` (Shi et al. 2023, arXiv 2309.06497, §4): units
sorted by cost, largest first (ties keep their order), each given to the least-loaded rank (ties: the lower
rank).  It sees only costs computed from parameter metadata, so every rank computes the same plan and a
checkpoint does not depend on which gradients existed.  LPT is within 4/3 of the best makespan (Graham 1969).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence


def assign_owners(costs: Sequence[float], world_size: int) -> list[int]:
    """The owner rank of each unit (``costs[i] >= 0``, finite), balancing the summed cost per rank."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"assign_owners: world_size must be a positive integer, got {world_size!r}")
    if any(not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0) for c in costs):
        raise ValueError("assign_owners: every cost must be a finite number >= 0")
    order = sorted(range(len(costs)), key=lambda i: -costs[i])  # stable: equal costs keep their order
    heap = [(0.0, rank) for rank in range(world_size)]
    owners = [0] * len(costs)
    for i in order:
        load, rank = heapq.heappop(heap)
        owners[i] = rank
        heapq.heappush(heap, (load + float(costs[i]), rank))
    return owners


def rank_loads(costs: Sequence[float], owners: Sequence[int], world_size: int) -> list[float]:
    """The summed cost per rank of a plan."""
    loads = [0.0] * world_size
    for cost, owner in zip(costs, owners, strict=True):
        loads[owner] += float(cost)
    return loads


def imbalance(costs: Sequence[float], owners: Sequence[int], world_size: int) -> float:
    """Largest rank load over the ideal ``Σcost / W`` (1.0 is perfect; the step waits for the slowest rank)."""
    total = float(sum(costs))
    return max(rank_loads(costs, owners, world_size)) * world_size / total if total > 0 else 1.0
