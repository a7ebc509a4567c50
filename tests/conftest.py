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
