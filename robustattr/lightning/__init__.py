"""Lightning integration: RobustClassifier, the validation-time evaluation callbacks and training schedules."""

from robustattr.lightning.attribution_callback import (
    AttributionMapLogger,
    AttributionRobustnessCallback,
)
from robustattr.lightning.bounds_callback import WorstCaseBoundCallback
from robustattr.lightning.certification_callback import CertificationCallback
from robustattr.lightning.eval_base import EvalSubsetCallback
from robustattr.lightning.module import RobustClassifier
from robustattr.lightning.schedules import BudgetWarmup

__all__ = ["AttributionMapLogger", "AttributionRobustnessCallback", "BudgetWarmup", "CertificationCallback", "EvalSubsetCallback", "RobustClassifier", "WorstCaseBoundCallback"]
