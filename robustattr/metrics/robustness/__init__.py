"""Quantus-style robustness metrics: ``update(model, x, y, index)`` with an owned attribution method.

Max-/Avg-Sensitivity, Local Lipschitz Estimate, Continuity, Consistency and Relative
Input/Output/Representation Stability, with Quantus 0.6's definitions and defaults, batched
(all perturbed copies folded into the batch dimension) and seeded per sample. See
:mod:`robustattr.metrics.robustness.base` for the calling convention.
"""

from robustattr.metrics.robustness import functional
from robustattr.metrics.robustness.base import (
    GaussianNoise,
    RobustnessMetric,
    UniformNoise,
    normalise_by_max,
)
from robustattr.metrics.robustness.consistency import Consistency, discretise
from robustattr.metrics.robustness.continuity import Continuity, translate_x, translation_shifts
from robustattr.metrics.robustness.relative_stability import (
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    default_representation_layers,
)
from robustattr.metrics.robustness.sensitivity import (
    AvgSensitivity,
    LocalLipschitzEstimate,
    MaxSensitivity,
)

__all__ = [
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
    "default_representation_layers",
    "discretise",
    "functional",
    "normalise_by_max",
    "translate_x",
    "translation_shifts",
]
