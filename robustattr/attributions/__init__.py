"""Differentiable attributions: ``attr(model, x, y, create_graph=False) -> Tensor`` shaped like x."""

from robustattr.attributions.base import Attribution, attribution_map, logit_input_grad
from robustattr.attributions.captum_adapter import CaptumAttribution
from robustattr.attributions.grad_cam import GradCAM
from robustattr.attributions.gradient_shap import GradientSHAP, GradientSHAPDraw
from robustattr.attributions.guided_backprop import GuidedBackprop
from robustattr.attributions.input_x_gradient import InputXGradient
from robustattr.attributions.integrated_gradients import IntegratedGradients
from robustattr.attributions.saliency import Saliency
from robustattr.attributions.smoothgrad_squared import SmoothGradSquared
from robustattr.attributions.smoothing import (
    SmoothGrad,
    UniformSmoothed,
    sample_gaussian,
    sample_l2_ball,
    sample_linf_cube,
)
from robustattr.attributions.vargrad import VarGrad

__all__ = [
    "Attribution",
    "CaptumAttribution",
    "GradCAM",
    "GradientSHAP",
    "GradientSHAPDraw",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
    "SmoothGrad",
    "SmoothGradSquared",
    "UniformSmoothed",
    "VarGrad",
    "attribution_map",
    "logit_input_grad",
    "sample_gaussian",
    "sample_l2_ball",
    "sample_linf_cube",
]
