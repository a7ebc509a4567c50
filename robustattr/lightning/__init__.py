"""Lightning integration: RobustClassifier and the validation-time evaluation callbacks."""

from robustattr.lightning.certification_callback import CertificationCallback
from robustattr.lightning.bounds_callback import WorstCaseBoundCallback
from robustattr.lightning.eval_base import EvalSubsetCallback
from robustattr.lightning.module import RobustClassifier

__all__ = ["CertificationCallback", "EvalSubsetCallback", "RobustClassifier", "WorstCaseBoundCallback"]
