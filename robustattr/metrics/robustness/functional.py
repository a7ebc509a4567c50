"""Functional per-sample API of the robustness metrics: ``f(model, x, y, attribution, **kw) -> [B]``.

Each function builds the metric class with ``attribution`` and ``**kwargs`` and returns its
:meth:`~robustattr.metrics.robustness.base.RobustnessMetric.per_sample` values (float64,
NaN where undefined). ``index`` seeds per-sample perturbations (``seed + index``) and
``x_perturbed`` (``[n, B, C, H, W]``) injects exact perturbed inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from robustattr.attributions import Attribution
from robustattr.metrics.robustness.base import RobustnessMetric
from robustattr.metrics.robustness.consistency import Consistency
from robustattr.metrics.robustness.continuity import Continuity
from robustattr.metrics.robustness.relative_stability import (
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
)
from robustattr.metrics.robustness.sensitivity import (
    AvgSensitivity,
    LocalLipschitzEstimate,
    MaxSensitivity,
)

__all__ = [
    "avg_sensitivity",
    "consistency",
    "continuity",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "relative_input_stability",
    "relative_output_stability",
    "relative_representation_stability",
]

Index = Tensor | Sequence[int] | None


def _run(cls: type[RobustnessMetric], model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None,
         index: Index, x_perturbed: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
    return cls(attribution=attribution, **kwargs).per_sample(model, x, y, index=index, x_perturbed=x_perturbed)


def max_sensitivity(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
                    index: Index = None, x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.MaxSensitivity` ``[B]``."""
    return _run(MaxSensitivity, model, x, y, attribution, index, x_perturbed, kwargs)


def avg_sensitivity(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
                    index: Index = None, x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.AvgSensitivity` ``[B]``."""
    return _run(AvgSensitivity, model, x, y, attribution, index, x_perturbed, kwargs)


def local_lipschitz_estimate(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
                             index: Index = None, x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.LocalLipschitzEstimate` ``[B]``."""
    return _run(LocalLipschitzEstimate, model, x, y, attribution, index, x_perturbed, kwargs)


def continuity(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
               x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.Continuity` ``[B]``."""
    return _run(Continuity, model, x, y, attribution, None, x_perturbed, kwargs)


def consistency(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, **kwargs: Any) -> Tensor:
    """Within-batch :class:`~robustattr.metrics.robustness.Consistency` ``[B]``."""
    return _run(Consistency, model, x, y, attribution, None, None, kwargs)


def relative_input_stability(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
                             index: Index = None, x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.RelativeInputStability` ``[B]``."""
    return _run(RelativeInputStability, model, x, y, attribution, index, x_perturbed, kwargs)


def relative_output_stability(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
                              index: Index = None, x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.RelativeOutputStability` ``[B]``."""
    return _run(RelativeOutputStability, model, x, y, attribution, index, x_perturbed, kwargs)


def relative_representation_stability(model: nn.Module, x: Tensor, y: Tensor, attribution: Attribution | None = None, *,
                                      index: Index = None, x_perturbed: Tensor | None = None, **kwargs: Any) -> Tensor:
    """Per-sample :class:`~robustattr.metrics.robustness.RelativeRepresentationStability` ``[B]``."""
    return _run(RelativeRepresentationStability, model, x, y, attribution, index, x_perturbed, kwargs)
