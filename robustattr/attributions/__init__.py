"""Differentiable attributions: ``attr(model, x, y, create_graph=False) -> Tensor`` shaped like x."""

from robustattr.attributions.base import Attribution, attribution_map, logit_input_grad
from robustattr.attributions.input_x_gradient import InputXGradient
from robustattr.attributions.integrated_gradients import IntegratedGradients
from robustattr.attributions.saliency import Saliency
from robustattr.attributions.smoothing import (
    SmoothGrad,
    UniformSmoothed,
    sample_gaussian,
    sample_l2_ball,
    sample_linf_cube,
)

__all__ = [
    "Attribution",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
    "SmoothGrad",
    "UniformSmoothed",
    "attribution_map",
    "logit_input_grad",
    "sample_gaussian",
    "sample_l2_ball",
    "sample_linf_cube",
]
