"""The contract of every robust objective: ``loss(model, x, y) -> LossOutput``."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn


class LossOutput(NamedTuple):
    """What a robust objective returns.

    Attributes:
        loss: scalar to back-propagate (one ordinary ``backward``; DDP-safe).
        terms: detached scalars for logging as ``train/<name>`` (e.g. ``{"ce": …, "kl": …}``).
        logits: clean logits ``[B, K]`` if the objective computed them (used for train
            accuracy without an extra forward), else ``None``.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    logits: Tensor | None = None


@runtime_checkable
class RobustLoss(Protocol):
    """``__call__(model, x, y) -> LossOutput``; ``x: [B, C, H, W]`` in [0,1], ``y: [B]``."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput: ...
