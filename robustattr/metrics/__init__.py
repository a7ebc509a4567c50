"""Attribution robustness metrics: functional tensors ops and torchmetrics classes."""

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

__all__: list[str] = [
    "METRICS",
    "AttributionMetric",
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
