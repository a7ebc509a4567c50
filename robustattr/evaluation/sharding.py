"""Deterministic, cost-balanced assignment of samples to processes (no padding duplicates).

Every selected sample is evaluated by exactly one rank. Because every random stream of a
sample is seeded from its dataset index, which rank evaluates it does not change its result:
1 process and W processes produce identical per-sample values.

Batched float32 kernels round differently for different batch compositions (measured: ~1e-8
on a logit), so bitwise equality across world sizes also needs each sample's batch-mates to
be independent of the world size: :func:`assign_batches` forms the batches over the whole
selection first and deals whole batches to ranks.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["Batch", "assign", "assign_batches", "shard"]


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


@dataclass(frozen=True)
class Batch:
    """One batch of a run: the samples evaluated together and those whose results are still missing.

    Attributes:
        indices: dataset indices evaluated together, in selection order.
        todo: the members (same order) that have no result yet; only their results are kept.
    """

    indices: tuple[int, ...]
    todo: tuple[int, ...]


def assign_batches(
    indices: Sequence[int],
    batch_size: int,
    world_size: int,
    done: Collection[int] = (),
    cost: float = 1.0,
) -> list[list[Batch]]:
    """Batches of ``batch_size`` over ``indices``, those with missing results dealt to ranks.

    The batches are ``indices[k·B:(k+1)·B]`` over the *whole* selection, whatever is already
    done and whatever the world size, so a sample always has the same batch-mates. Batches
    whose members are all in ``done`` are skipped; a batch with some members done is kept
    whole (its finished members are evaluated again and their results discarded), so the
    missing members see exactly the batch of an uninterrupted run. The remaining batches go
    to ranks with :func:`assign` (cost of a batch = its size × ``cost``: greedy
    longest-processing-time, round robin for equal costs); each rank keeps selection order.

    Args:
        indices: the selected dataset indices (distinct), in selection order.
        batch_size: samples per batch B ≥ 1.
        world_size: number of ranks W ≥ 1.
        done: indices that already have results.
        cost: relative cost of one sample (e.g. ``Evaluator.cost()``), > 0.

    Returns:
        ``W`` lists of :class:`Batch`; every index not in ``done`` is in exactly one ``todo``.

    Raises:
        ValueError: ``batch_size < 1``, ``world_size < 1``, a non-positive ``cost`` or duplicate indices.

    Examples:
        >>> [[b.todo for b in r] for r in assign_batches([5, 1, 7, 3, 9], 2, 2, done={5, 1, 3})]
        [[(7,)], [(9,)]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not (cost > 0 and cost < float("inf")):
        raise ValueError(f"cost must be finite and > 0, got {cost}")
    idx = [int(i) for i in indices]
    if len(set(idx)) != len(idx):
        raise ValueError("indices contain duplicates")
    finished = set(done)
    batches = []
    for s in range(0, len(idx), batch_size):
        members = tuple(idx[s : s + batch_size])
        todo = tuple(i for i in members if i not in finished)
        if todo:
            batches.append(Batch(members, todo))
    shares = assign(list(range(len(batches))), world_size, [len(b.indices) * cost for b in batches])
    return [[batches[k] for k in share] for share in shares]
