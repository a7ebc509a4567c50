"""Robust training objectives; each returns ``LossOutput(loss, terms)``."""

from robustattr.losses.base import LossOutput, RobustLoss
from robustattr.losses.standard import StandardLoss

__all__ = ["LossOutput", "RobustLoss", "StandardLoss"]
