"""Per-channel normalisation as the first layer of a model, so every budget is in [0,1] pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x - mean[c]) / std[c]`` applied per channel.

    Args:
        mean: per-channel means, length C.
        std: per-channel standard deviations, length C (all > 0).

    Shapes: ``x`` is ``[B, C, H, W]`` in ``[0, 1]``; the output has the same shape.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects {self.mean.shape[1]} channels, got input of shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
