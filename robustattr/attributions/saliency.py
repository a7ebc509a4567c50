"""Saliency (Simonyan et al. 2014): ``g(x) = ∇_x f_y(x)``."""

from __future__ import annotations

from torch import Tensor, nn

from robustattr.attributions.base import Attribution, logit_input_grad
from robustattr.registry import register


@register("attribution", "saliency")
class Saliency(Attribution):
    """Signed gradient of the explained logit, ``g = ∇_x f_y(x)``; ``[B,C,H,W] → [B,C,H,W]``.

    Unlike Captum's ``Saliency`` (which defaults to ``abs=True``), the sign is kept; the
    metrics take ``Σ_c |g_c|`` themselves.
    """

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return logit_input_grad(model, x, y, create_graph)
