"""Standard training: ``L = CE(f(x), y)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.losses.base import LossOutput
from robustattr.registry import register


@register("loss", "standard")
class StandardLoss:
    """``L = mean_i CE(f(x_i), y_i)``; terms ``{"ce"}``. ``x: [B, C, H, W]``, ``y: [B]``."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        return LossOutput(ce, {"ce": ce.detach()}, logits.detach())

    def __repr__(self) -> str:
        return "StandardLoss()"
