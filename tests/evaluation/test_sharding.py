"""Sample and batch assignment to ranks: disjoint and complete, deterministic, cost balanced, and
batch composition independent of the world size and of what is already done."""

from __future__ import annotations

import itertools
import random

import pytest

from robustattr.evaluation.sharding import Batch, assign, assign_batches, shard


def test_assign_equal_costs_is_round_robin_and_complete() -> None:
    idx = [9, 4, 7, 1, 3, 8, 2]
    for w in (1, 2, 3, 7, 10):
        shares = assign(idx, w)
        assert shares == [idx[r::w] for r in range(w)]
        assert sorted(i for s in shares for i in s) == sorted(idx)
        assert [shard(idx, r, w) for r in range(w)] == shares


def test_assign_balances_cost_within_the_lpt_bound() -> None:
    """Greedy longest-processing-time: makespan ≤ (4/3 − 1/(3W))·OPT (Graham 1969), OPT by brute force."""
    rng = random.Random(0)
    for _ in range(30):
        n, w = rng.randint(1, 8), rng.randint(1, 3)
        idx = rng.sample(range(100), n)
        cost = [float(rng.randint(1, 9)) for _ in idx]
        shares = assign(idx, w, cost)
        assert sorted(i for s in shares for i in s) == sorted(idx)
        for s in shares:  # each rank keeps the input order
            assert s == [i for i in idx if i in s]
        c = dict(zip(idx, cost, strict=True))
        makespan = max(sum(c[i] for i in s) for s in shares)
        opt = min(max(sum(cost[p] for p in range(n) if owner[p] == r) for r in range(w))
                  for owner in itertools.product(range(w), repeat=n))
        assert makespan <= (4 / 3 - 1 / (3 * w)) * opt + 1e-9


def test_assign_errors() -> None:
    with pytest.raises(ValueError, match="world_size"):
        assign([1], 0)
    with pytest.raises(ValueError, match="duplicates"):
        assign([1, 1], 2)
    with pytest.raises(ValueError, match="cost has 1 entries for 2"):
        assign([1, 2], 2, [1.0])
    with pytest.raises(ValueError, match="finite"):
        assign([1, 2], 2, [1.0, float("nan")])
    with pytest.raises(ValueError, match="rank"):
        shard([1, 2], 2, 2)


def _chunks(sel: list[int], b: int) -> list[tuple[int, ...]]:
    return [tuple(sel[k : k + b]) for k in range(0, len(sel), b)]


def test_batches_are_the_selections_chunks_for_every_world_size_and_done_set() -> None:
    rng = random.Random(1)
    for _ in range(50):
        sel = rng.sample(range(500), rng.randint(1, 40))
        b, w = rng.randint(1, 6), rng.randint(1, 5)
        done = set(rng.sample(sel, rng.randint(0, len(sel))))
        plan = assign_batches(sel, b, w, done, cost=2.5)
        assert len(plan) == w
        batches = [x for share in plan for x in share]
        chunks = _chunks(sel, b)
        # the batches are exactly the selection's chunks that hold a missing sample, each once
        assert sorted(x.indices for x in batches) == sorted(c for c in chunks if set(c) - done)
        for x in batches:
            assert x.todo == tuple(i for i in x.indices if i not in done)
        todo = [i for x in batches for i in x.todo]
        assert sorted(todo) == sorted(set(sel) - done) and len(todo) == len(set(todo))
        for share in plan:  # selection order within a rank
            firsts = [sel.index(x.indices[0]) for x in share]
            assert firsts == sorted(firsts)
        # balance: whole batches, so ranks differ by at most one batch's cost
        loads = [sum(len(x.indices) for x in share) for share in plan]
        assert max(loads) - min(loads) <= b


def test_batch_composition_does_not_depend_on_world_size() -> None:
    sel = list(range(3, 40, 3))
    by_w = [sorted(x.indices for share in assign_batches(sel, 4, w) for x in share) for w in (1, 2, 3, 8, 20)]
    assert all(v == by_w[0] for v in by_w) and by_w[0] == _chunks(sel, 4)
    plan = assign_batches(sel, 4, 2)
    assert [[x.indices for x in s] for s in plan] == [_chunks(sel, 4)[0::2], _chunks(sel, 4)[1::2]]  # round robin
    assert assign_batches([5, 1, 7, 3, 9], 2, 2, done={5, 1, 3}) == [[Batch((7, 3), (7,))], [Batch((9,), (9,))]]
    assert assign_batches([1, 2], 2, 3, done={1, 2}) == [[], [], []]


def test_assign_batches_errors() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        assign_batches([1], 0, 1)
    with pytest.raises(ValueError, match="world_size"):
        assign_batches([1], 1, 0)
    with pytest.raises(ValueError, match="cost"):
        assign_batches([1], 1, 1, cost=0.0)
    with pytest.raises(ValueError, match="duplicates"):
        assign_batches([1, 1], 1, 1)
