"""Small helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


def fit_on_digits(model: nn.Module, train_set: Dataset, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    """Adam on the CE for ``epochs`` shuffled passes (batch 64, shuffle seeded by ``seed``); returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for x, y in DataLoader(train_set, batch_size=64, shuffle=True, generator=g):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()
