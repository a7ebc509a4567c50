"""Shared fixtures: offline W&B in a temporary folder, fixed seeds, tiny digits data."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _wandb_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))


@pytest.fixture
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 real digits ``[16, 1, 28, 28]`` in [0, 1] and their labels."""
    from robustattr.data.digits import load_digits_tensors

    x, y = load_digits_tensors(28)
    return x[:16].clone(), y[:16].clone()


@pytest.fixture
def small_cnn() -> torch.nn.Module:
    """A seeded, untrained SmallCNN behind Normalize, in eval mode."""
    from robustattr.models import SmallCNN, build_model

    torch.manual_seed(0)
    return build_model(SmallCNN(), (0.3053,), (0.3247,)).eval()


@pytest.fixture(scope="session")
def trained_digits_model() -> torch.nn.Module:
    """SmallCNN trained 3 epochs on the digits train split (seeded, ~1 min on 2 CPU cores), eval mode."""
    import torch.nn.functional as F

    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN, build_model

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    model = build_model(SmallCNN(), dm.mean, dm.std)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for x, y in torch.utils.data.DataLoader(dm.train_set, batch_size=64, shuffle=True, generator=g):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()
