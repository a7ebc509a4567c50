"""Robust training objectives; each returns ``LossOutput(loss, terms)``."""

from robustattr.losses.art import ARTLoss
from robustattr.losses.base import LossOutput, RobustLoss
from robustattr.losses.ig_norm import IGNormLoss, IGSumNormLoss
from robustattr.losses.igr import IGRLoss, TRADESIGRLoss
from robustattr.losses.pgd_at import PGDAdversarialLoss
from robustattr.losses.ssr import SSRLoss
from robustattr.losses.standard import StandardLoss
from robustattr.losses.trades import TRADESLoss

__all__ = [
    "ARTLoss",
    "IGNormLoss",
    "IGRLoss",
    "IGSumNormLoss",
    "LossOutput",
    "PGDAdversarialLoss",
    "RobustLoss",
    "SSRLoss",
    "StandardLoss",
    "TRADESIGRLoss",
    "TRADESLoss",
]
