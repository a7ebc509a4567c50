"""Compose ``Normalize`` and a backbone into the network that sees ``[0,1]`` pixels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from robustattr.models.normalize import Normalize


def build_model(backbone: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Sequential:
    """``nn.Sequential(Normalize(mean, std), backbone)`` (or just the backbone when mean is None).

    Shapes: ``[B, C, H, W]`` in ``[0, 1]`` → logits ``[B, K]``.
    """
    if mean is None:
        if std is not None:
            raise ValueError("std given without mean")
        return nn.Sequential(nn.Identity(), backbone)
    if std is None:
        raise ValueError("mean given without std")
    return nn.Sequential(Normalize(mean, std), backbone)
