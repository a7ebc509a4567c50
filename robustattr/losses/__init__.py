"""Robust training objectives; each returns ``LossOutput(loss, terms)``."""

from robustattr.losses.art import ARTLoss
from robustattr.losses.base import LossOutput, RobustLoss
from robustattr.losses.ig_norm import IGNormLoss
from robustattr.losses.igr import IGRLoss
from robustattr.losses.pgd_at import PGDAdversarialLoss
from robustattr.losses.ssr import SSRLoss
from robustattr.losses.standard import StandardLoss
from robustattr.losses.trades import TRADESLoss

__all__ = [
    "ARTLoss",
    "IGNormLoss",
    "IGRLoss",
    "LossOutput",
    "PGDAdversarialLoss",
    "RobustLoss",
    "SSRLoss",
    "StandardLoss",
    "TRADESLoss",
]
