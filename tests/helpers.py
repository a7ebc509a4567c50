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


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class _FirstLogit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def tiny_cnn(num_classes: int = 10, batchnorm: bool = False, seed: int = 0) -> nn.Module:
    """conv(4)-[BatchNorm]-ReLU-maxpool(2)-linear for ``[B, 1, 8, 8]`` inputs, seeded, in eval mode.

    With ``batchnorm=True`` the running statistics are moved away from (0, 1) by a few
    train-mode forwards, so train-mode and eval-mode outputs differ clearly.
    """
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes)]
    model = nn.Sequential(*layers)
    if batchnorm:
        model.train()
        with torch.no_grad():
            for _ in range(5):
                model(0.5 + 2.0 * torch.rand(16, 1, 8, 8))
    return model.eval()


def nan_logit_model() -> nn.Module:
    """Linear classifier whose logits are all NaN (NaN bias) while its input gradient is finite."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 10)
    with torch.no_grad():
        lin.bias.fill_(float("nan"))
    return nn.Sequential(nn.Flatten(), lin).eval()


def overflowing_model() -> nn.Module:
    """A float32 network whose logits and gradients overflow to ±inf (a scale of 1e60 after a linear layer)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), _Scale(1e30), _Scale(1e30)).eval()


def vector_output_model() -> nn.Module:
    """A model returning ``[B]`` (one logit per sample) instead of ``[B, K]``."""
    return nn.Sequential(tiny_cnn(), _FirstLogit()).eval()


def tiny_batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: [n, 1, 8, 8]`` uniform in [0.05, 0.95] and the predictions of :func:`tiny_cnn` as labels."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 + 0.9 * torch.rand(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = tiny_cnn()(x).argmax(1)
    return x, y
