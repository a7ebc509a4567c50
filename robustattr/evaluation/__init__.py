"""The evaluation suite of a checkpoint: evaluators over batches (per-sample tensors + summary).

Registered evaluators (``robustattr.registry.available("evaluator")``): ``accuracy``
(:class:`CleanAccuracy`), ``pgd_accuracy`` (:class:`PGDAccuracy`), ``attribution_attack``
(:class:`AttributionAttackEvaluator`), ``smoothing`` (:class:`SmoothingEvaluator`),
``bounds`` (:class:`BoundsEvaluator`) and ``robustness`` (:class:`RobustnessEvaluator`: the
Quantus-definition robustness metrics). The validation callbacks, ``certify.py`` and the study
all run these; :mod:`robustattr.evaluation.sharding` spreads samples over processes.
"""

from robustattr.evaluation.accuracy import CleanAccuracy, PGDAccuracy
from robustattr.evaluation.attribution_attack import DEFAULT_METRICS, AttributionAttackEvaluator
from robustattr.evaluation.base import Evaluator, describe
from robustattr.evaluation.bounds import BoundsEvaluation, BoundsEvaluator, evaluate_bounds
from robustattr.evaluation.robustness import DEFAULT_ROBUSTNESS_METRICS, RobustnessEvaluator
from robustattr.evaluation.sharding import Batch, assign, assign_batches, shard
from robustattr.evaluation.smoothing import SmoothingEvaluator

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_ROBUSTNESS_METRICS",
    "AttributionAttackEvaluator",
    "Batch",
    "BoundsEvaluation",
    "BoundsEvaluator",
    "CleanAccuracy",
    "Evaluator",
    "PGDAccuracy",
    "RobustnessEvaluator",
    "SmoothingEvaluator",
    "assign",
    "assign_batches",
    "describe",
    "evaluate_bounds",
    "shard",
]
