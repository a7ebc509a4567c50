"""Backbones, the Normalize layer and the softplus activation swap."""

from robustattr.models.activation import (
    SmoothMaxPool2d,
    replace_activation,
    replace_maxpool,
    softplus_surrogate,
)
from robustattr.models.build import build_model
from robustattr.models.normalize import Normalize
from robustattr.models.small_cnn import SmallCNN
from robustattr.models.timm_backbone import TimmBackbone, timm_backbone

__all__ = ["Normalize", "SmallCNN", "SmoothMaxPool2d", "TimmBackbone", "build_model", "replace_activation", "replace_maxpool", "softplus_surrogate", "timm_backbone"]
