"""torchmetrics wrappers of :mod:`robustattr.metrics.functional` (sum states only, DDP-synced).

Every class is updated with two maps ``[B, H, W]`` (or attributions ``[B, C, H, W]``, reduced
by ``Σ_c|·|``; :class:`CosineSimilarity` uses them flattened as they are) and accumulates the
per-sample values as ``total`` (sum) and ``count`` — no list of maps is ever stored, so
``dist_reduce_fx="sum"`` makes the DDP reduction exact. ``compute()`` returns the mean over
all samples seen (0 when none). Metrics with two directions (LENS top-k) return a dict
``{"fwd", "bwd", "mean"}``.

Every class also exposes ``per_sample(a, b) -> dict[str, Tensor[B]]`` (used by
:class:`~robustattr.lightning.AttributionRobustnessCallback`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from robustattr.metrics import functional as RF
from robustattr.registry import register

__all__ = [
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
    "METRICS",
    "build_metric",
]


class AttributionMetric(Metric):
    """Base: mean of per-sample values with sum states ``total[key]`` and ``count``."""

    full_state_update = False
    higher_is_better: bool | None = True
    keys: tuple[str, ...] = ("value",)
    name: str = "metric"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key in self.keys:
            self.add_state(f"total_{key}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Per-sample values ``{key: [B]}``."""
        raise NotImplementedError

    def update(self, a: Tensor, b: Tensor) -> None:  # type: ignore[override]
        """Add the per-sample values of the pair ``(a, b)`` (``[B, H, W]`` or ``[B, C, H, W]``)."""
        vals = self.per_sample(a, b)
        for key in self.keys:
            setattr(self, f"total_{key}", getattr(self, f"total_{key}") + vals[key].to(torch.float64).sum())
        self.count = self.count + vals[self.keys[0]].shape[0]

    def compute(self) -> Tensor | dict[str, Tensor]:  # type: ignore[override]
        """Mean over samples: a scalar, or ``{key: scalar}`` for multi-direction metrics."""
        n = self.count.clamp_min(1).to(torch.float64)
        out = {key: (getattr(self, f"total_{key}") / n).to(torch.float32) for key in self.keys}
        return out["value"] if self.keys == ("value",) else out


@register("metric", "topk")
class TopKIntersection(AttributionMetric):
    """``|T_k(a) ∩ T_k(b)| / k`` (default k=100 for 28×28 maps, as in Ghorbani et al., AAAI 2019, arXiv:1710.10547)."""

    name = "topk"

    def __init__(self, k: int = 100, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(**kwargs)
        self.k = k

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.topk_intersection(a, b, self.k)}


@register("metric", "lens_topk")
class LENSTopK(AttributionMetric):
    """LENS top-k: ``fwd = |N_w(T_k(a)) ∩ T_k(b)|/k``, ``bwd = |T_k(a) ∩ N_w(T_k(b))|/k``, ``mean``."""

    name = "lens_topk"
    keys = ("fwd", "bwd", "mean")

    def __init__(self, k: int = 100, w: int = 3, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if w < 1 or w % 2 == 0:
            raise ValueError(f"w must be a positive odd integer, got {w}")
        super().__init__(**kwargs)
        self.k, self.w = k, w

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        fwd, bwd = RF.lens_topk(a, b, self.k, self.w)
        return {"fwd": fwd, "bwd": bwd, "mean": (fwd + bwd) / 2}


@register("metric", "topk_div")
class TopKDiverse(AttributionMetric):
    """``|D_k(a) ∩ D_k(b)|/k`` with greedy diverse top-k sets (w×w exclusion windows)."""

    name = "topk_div"

    def __init__(self, k: int = 100, w: int = 3, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if w < 1 or w % 2 == 0:
            raise ValueError(f"w must be a positive odd integer, got {w}")
        super().__init__(**kwargs)
        self.k, self.w = k, w

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.topk_div_intersection(a, b, self.k, self.w)}


@register("metric", "lens_topk_div")
class LENSTopKDiverse(LENSTopK):
    """LENS on diverse top-k sets, both directions and their mean."""

    name = "lens_topk_div"

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        fwd, bwd = RF.lens_topk_div(a, b, self.k, self.w)
        return {"fwd": fwd, "bwd": bwd, "mean": (fwd + bwd) / 2}


@register("metric", "spearman")
class SpearmanCorrelation(AttributionMetric):
    """Spearman ρ of the two maps (average ranks; equals ``scipy.stats.spearmanr``)."""

    name = "spearman"

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.spearman(a, b)}


@register("metric", "kendall")
class KendallTau(AttributionMetric):
    """Kendall τ-b of the two maps (equals ``scipy.stats.kendalltau``); ``backend`` as in the functional."""

    name = "kendall"

    def __init__(self, backend: str = "auto", **kwargs: Any) -> None:
        if backend not in ("auto", "torch", "scipy"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'scipy', got {backend!r}")
        super().__init__(**kwargs)
        self.backend = backend

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.kendall_tau(a, b, backend=self.backend)}


@register("metric", "lens_spearman")
class LENSSpearman(AttributionMetric):
    """Spearman ρ after w×w max-pooling of both maps."""

    name = "lens_spearman"

    def __init__(self, w: int = 3, **kwargs: Any) -> None:
        if w < 1 or w % 2 == 0:
            raise ValueError(f"w must be a positive odd integer, got {w}")
        super().__init__(**kwargs)
        self.w = w

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.lens_spearman(a, b, self.w)}


@register("metric", "lens_kendall")
class LENSKendall(LENSSpearman):
    """Kendall τ-b after w×w max-pooling of both maps."""

    name = "lens_kendall"

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.lens_kendall(a, b, self.w)}


@register("metric", "cosine")
class CosineSimilarity(AttributionMetric):
    """Cosine similarity of the flattened attributions ``g`` (not the maps)."""

    name = "cosine"

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.cosine_similarity(a, b)}


@register("metric", "mass_center")
class MassCenterDislocation(AttributionMetric):
    """``‖C(a) − C(b)‖₂`` in pixels (lower means more robust)."""

    name = "mass_center"
    higher_is_better = False

    def per_sample(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"value": RF.mass_center_dislocation(a, b)}


#: Name → class, for YAML lists of metric names.
METRICS: dict[str, type[AttributionMetric]] = {
    cls.name: cls
    for cls in (
        TopKIntersection,
        LENSTopK,
        TopKDiverse,
        LENSTopKDiverse,
        SpearmanCorrelation,
        KendallTau,
        LENSSpearman,
        LENSKendall,
        CosineSimilarity,
        MassCenterDislocation,
    )
}


def build_metric(spec: str | AttributionMetric) -> AttributionMetric:
    """A metric instance from a name in :data:`METRICS` (default arguments) or an instance."""
    if isinstance(spec, AttributionMetric):
        return spec
    if spec not in METRICS:
        raise ValueError(f"unknown metric {spec!r}; choose from {sorted(METRICS)}")
    return METRICS[spec]()
