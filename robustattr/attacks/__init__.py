"""Attacks: PGD on the loss and attribution attacks; all batched, results detached in ball ∩ [0,1]."""

from robustattr.attacks.core import AttackResult, ProjectedAscentAttack
from robustattr.attacks.ifia import (
    IFIAAttack,
    LENSTopKAttack,
    MassCenterAttack,
    RandomSignAttack,
    TargetedAttack,
    TopKAttack,
)
from robustattr.attacks.l2_attribution import L2AttributionAttack
from robustattr.attacks.manipulate import ManipulateAttack
from robustattr.attacks.pgd import PGD

__all__: list[str] = ["PGD"]
__all__ += ["AttackResult", "L2AttributionAttack", "ProjectedAscentAttack"]
__all__ += ["IFIAAttack", "LENSTopKAttack", "ManipulateAttack", "MassCenterAttack", "RandomSignAttack", "TargetedAttack", "TopKAttack"]
