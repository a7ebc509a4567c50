"""Input × Gradient: ``g(x) = x ⊙ ∇_x f_y(x)``."""

from __future__ import annotations

from torch import Tensor, nn

from robustattr.attributions.base import Attribution, logit_input_grad
from robustattr.registry import register


@register("attribution", "input_x_gradient")
class InputXGradient(Attribution):
    """``g = x ⊙ ∇_x f_y(x)``; ``[B,C,H,W] → [B,C,H,W]``."""

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return x * logit_input_grad(model, x, y, create_graph)
