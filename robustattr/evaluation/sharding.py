"""Deterministic, cost-balanced assignment of samples to processes (no padding duplicates).

Every selected sample is evaluated by exactly one rank. Because every random stream of a
sample is seeded from its dataset index, which rank evaluates it does not change its result:
1 process and W processes produce identical per-sample values.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

__all__ = ["assign", "shard"]


def assign(indices: Sequence[int], world_size: int, cost: Sequence[float] | None = None) -> list[list[int]]:
    """Split ``indices`` over ``world_size`` ranks, balancing the summed cost.

    Greedy longest-processing-time: samples in decreasing cost (ties: in the given order) go
    to the rank with the least total so far (ties: the lowest rank). With equal costs this is
    a round-robin deal, ``indices[r::world_size]``. Each rank's list keeps the input order.

    Args:
        indices: the dataset indices to evaluate (distinct).
        world_size: number of ranks W ≥ 1.
        cost: per-sample relative cost (default: all equal), same length as ``indices``.

    Returns:
        ``W`` lists whose disjoint union is ``indices``.

    Raises:
        ValueError: ``world_size < 1``, duplicate indices, or a cost list of the wrong length
            or with a negative/non-finite entry.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    idx = list(indices)
    if len(set(idx)) != len(idx):
        raise ValueError("indices contain duplicates")
    if cost is None:
        return [idx[r::world_size] for r in range(world_size)]
    c = [float(v) for v in cost]
    if len(c) != len(idx):
        raise ValueError(f"cost has {len(c)} entries for {len(idx)} indices")
    if any(not (v >= 0 and v < float("inf")) for v in c):
        raise ValueError("cost entries must be finite and >= 0")
    order = sorted(range(len(idx)), key=lambda p: (-c[p], p))
    heap = [(0.0, r) for r in range(world_size)]
    owner = [0] * len(idx)
    for p in order:
        load, r = heapq.heappop(heap)
        owner[p] = r
        heapq.heappush(heap, (load + c[p], r))
    return [[idx[p] for p in range(len(idx)) if owner[p] == r] for r in range(world_size)]


def shard(indices: Sequence[int], rank: int, world_size: int, cost: Sequence[float] | None = None) -> list[int]:
    """The indices rank ``rank`` evaluates: ``assign(indices, world_size, cost)[rank]``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return assign(indices, world_size, cost)[rank]
