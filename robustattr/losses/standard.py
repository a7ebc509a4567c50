"""Standard training: ``L = CE(f(x), y)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.losses.base import LossOutput, checked_loss
from robustattr.registry import register
from robustattr.utils import contract


@register("loss", "standard")
class StandardLoss:
    """``L = mean_i CE(f(x_i), y_i)``; terms ``{"ce"}``. ``x: [B, C, H, W]``, ``y: [B]``."""

    @checked_loss(probe=False)
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        logits = model(x)
        contract.check_logits(logits, x.shape[0], labels=y)
        ce = F.cross_entropy(logits, y)
        return LossOutput(ce, {"ce": ce.detach()}, logits.detach())

    def __repr__(self) -> str:
        return "StandardLoss()"
