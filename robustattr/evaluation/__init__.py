"""The evaluation suite of a checkpoint: evaluators over batches (per-sample tensors + summary).

Registered evaluators (``robustattr.registry.available("evaluator")``): ``accuracy``
(:class:`CleanAccuracy`), ``pgd_accuracy`` (:class:`PGDAccuracy`), ``attribution_attack``
(:class:`AttributionAttackEvaluator`), ``smoothing`` (:class:`SmoothingEvaluator`),
``bounds`` (:class:`BoundsEvaluator`), ``robustness`` (:class:`RobustnessEvaluator`: the
Quantus-definition robustness metrics) and ``targets`` (:class:`ObjectiveTargets`, each training
objective's own target). The validation callbacks, ``certify.py`` and the study
all run these; :mod:`robustattr.evaluation.sharding` spreads samples over processes.
"""

from robustattr.evaluation.accuracy import CleanAccuracy, PGDAccuracy
from robustattr.evaluation.attribution_attack import DEFAULT_METRICS, AttributionAttackEvaluator
from robustattr.evaluation.base import Evaluator, describe
from robustattr.evaluation.bounds import BoundsEvaluation, BoundsEvaluator, evaluate_bounds
from robustattr.evaluation.robustness import DEFAULT_ROBUSTNESS_METRICS, RobustnessEvaluator
from robustattr.evaluation.sharding import Batch, assign, assign_batches, shard
from robustattr.evaluation.smoothing import SmoothingEvaluator
from robustattr.evaluation.targets import TARGETS, ObjectiveTargets

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_ROBUSTNESS_METRICS",
    "AttributionAttackEvaluator",
    "Batch",
    "BoundsEvaluation",
    "BoundsEvaluator",
    "CleanAccuracy",
    "Evaluator",
    "ObjectiveTargets",
    "PGDAccuracy",
    "RobustnessEvaluator",
    "SmoothingEvaluator",
    "TARGETS",
    "assign",
    "assign_batches",
    "describe",
    "evaluate_bounds",
    "shard",
]
