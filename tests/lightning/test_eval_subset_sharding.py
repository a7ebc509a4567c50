"""EvalSubsetCallback splits its subset with the library's assignment helper (the one certify.py uses).

Each rank of a (faked) W-rank trainer evaluates exactly ``assign(subset, W)[rank]``, in that
order, and hands the gather the subset positions of those samples; the union over ranks is the
subset, each sample once. With batches of one sample the shares equal the ones
``certify.py``'s :func:`~robustattr.evaluation.sharding.assign_batches` deals, so a sample lands
on the same rank in the callback and in the application.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from robustattr.evaluation import Evaluator
from robustattr.evaluation.sharding import assign, assign_batches
from robustattr.lightning import EvalSubsetCallback


class _RecordIndex(Evaluator):
    """Returns the dataset index of each sample and records the calls."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def columns(self, num_classes: int | None = None) -> list[str]:
        return ["idx"]

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        self.seen += index.tolist()
        return {"idx": index.to(torch.float64)}

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        return {"n": float(results["idx"].numel())}


class _Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(4, 3)


class _Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.full((4,), float(i)), i % 3


@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_evaluates_its_assign_share(world: int, monkeypatch: pytest.MonkeyPatch) -> None:
    gathered: dict[int, list[list[int]]] = {}
    seen: dict[int, list[int]] = {}

    def fake_gather(pl_module: Any, chunks: dict[str, list[Tensor]], positions: list[list[int]], rank: int,
                    n_total: int) -> dict[str, Tensor]:
        gathered[rank] = positions
        return {"idx": torch.zeros(n_total, dtype=torch.float64)}

    monkeypatch.setattr(EvalSubsetCallback, "gather", staticmethod(fake_gather))
    subset: list[int] = []
    for rank in range(world):
        ev = _RecordIndex()
        cb = EvalSubsetCallback(ev, num_samples=11, batch_size=2, seed=5, progress=False, prefix="t")
        subset = cb.subset_indices(len(_Data())).tolist()
        trainer = SimpleNamespace(val_dataloaders=SimpleNamespace(dataset=_Data()), global_rank=rank,
                                  world_size=world, is_global_zero=rank == 0)
        cb.run(trainer, _Module())  # type: ignore[arg-type]
        seen[rank] = ev.seen
    shares = assign(subset, world)
    assert [seen[r] for r in range(world)] == shares  # exactly the helper's share, in subset order
    assert sorted(i for r in range(world) for i in seen[r]) == subset  # each sample once, no padding
    position = {i: p for p, i in enumerate(subset)}
    for r in range(world):
        assert gathered[r] == [[position[i] for i in share] for share in shares]
    dealt = assign_batches(subset, 1, world)  # certify.py's dealing with one-sample batches
    assert [[b.indices[0] for b in share] for share in dealt] == shares
