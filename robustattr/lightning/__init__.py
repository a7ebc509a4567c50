"""Lightning integration: RobustClassifier and the validation-time evaluation callbacks."""

from robustattr.lightning.attribution_callback import (
    AttributionMapLogger,
    AttributionRobustnessCallback,
)
from robustattr.lightning.bounds_callback import WorstCaseBoundCallback
from robustattr.lightning.certification_callback import CertificationCallback
from robustattr.lightning.eval_base import EvalSubsetCallback
from robustattr.lightning.module import RobustClassifier

__all__ = ["AttributionMapLogger", "AttributionRobustnessCallback", "CertificationCallback", "EvalSubsetCallback", "RobustClassifier", "WorstCaseBoundCallback"]
