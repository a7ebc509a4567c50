"""Attribution robustness metrics: functional tensor ops and torchmetrics classes.

Two families: :class:`AttributionMetric` compares two given maps (top-k, LENS, rank
correlations, cosine); :class:`RobustnessMetric` (Quantus's robustness metrics) is updated
with ``(model, x, y, index)`` and explains perturbed inputs itself.
"""

from robustattr.metrics import functional
from robustattr.metrics.classes import (
    METRICS,
    AttributionMetric,
    CosineSimilarity,
    KendallTau,
    LENSKendall,
    LENSSpearman,
    LENSTopK,
    LENSTopKDiverse,
    MassCenterDislocation,
    SpearmanCorrelation,
    TopKDiverse,
    TopKIntersection,
    build_metric,
)
from robustattr.metrics.functional import kendall_tau, lens_topk, spearman, topk_intersection
from robustattr.metrics.robustness import (
    AvgSensitivity,
    Consistency,
    Continuity,
    GaussianNoise,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    RobustnessMetric,
    UniformNoise,
)

__all__: list[str] = [
    "METRICS",
    "AttributionMetric",
    "AvgSensitivity",
    "Consistency",
    "Continuity",
    "GaussianNoise",
    "LocalLipschitzEstimate",
    "MaxSensitivity",
    "RelativeInputStability",
    "RelativeOutputStability",
    "RelativeRepresentationStability",
    "RobustnessMetric",
    "UniformNoise",
    "CosineSimilarity",
    "KendallTau",
    "LENSKendall",
    "LENSSpearman",
    "LENSTopK",
    "LENSTopKDiverse",
    "MassCenterDislocation",
    "SpearmanCorrelation",
    "TopKDiverse",
    "TopKIntersection",
    "build_metric",
    "functional",
    "kendall_tau",
    "lens_topk",
    "spearman",
    "topk_intersection",
]
