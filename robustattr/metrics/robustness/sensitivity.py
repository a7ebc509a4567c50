"""Max-/Avg-Sensitivity (Yeh et al. 2019) and the Local Lipschitz Estimate (Alvarez-Melis & Jaakkola 2018)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from robustattr.attributions import Attribution
from robustattr.metrics.robustness.base import (
    Chunk,
    GaussianNoise,
    RobustnessMetric,
    UniformNoise,
    flat_norm,
)
from robustattr.registry import register

__all__ = ["AvgSensitivity", "LocalLipschitzEstimate", "MaxSensitivity"]


@register("metric", "max_sensitivity")
class MaxSensitivity(RobustnessMetric):
    """``SENS_max(x) = max_j ‖g(x) − g(x̃_j)‖₂ / ‖g(x)‖₂`` over n perturbed copies ``x̃_j`` (lower is better).

    Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations", NeurIPS 2019 (arXiv:1901.09392), as implemented by Quantus 0.6
    (``MaxSensitivity``: relative Frobenius change, Monte-Carlo maximum). Quantus's defaults:
    n = 200, ``x̃ = x + U(−0.2, 0.2)^d``, no normalisation, no absolute value, ``nanmax`` over
    the copies. The n·B copies are explained folded into the batch dimension.

    Args:
        attribution, n_samples, seed, internal_batch_size, normalise, take_abs,
        nan_on_prediction_change: see :class:`RobustnessMetric`.
        perturbation: default :class:`UniformNoise` ``(−0.2, 0.2)``.

    Shapes: ``update(model, x [B, C, H, W], y [B], index [B])``; ``per_sample → [B]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> m = MaxSensitivity(n_samples=4)
        >>> m.update(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]), index=torch.tensor([0, 1]))
        >>> float(m.compute())  # a linear model's saliency does not move
        0.0
    """

    name = "max_sensitivity"
    reduction = "max"

    def __init__(
        self,
        attribution: Attribution | None = None,
        n_samples: int = 200,
        perturbation: Any = None,
        seed: int = 0,
        internal_batch_size: int | None = 256,
        normalise: bool = False,
        take_abs: bool = False,
        nan_on_prediction_change: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(attribution, n_samples, perturbation, seed, internal_batch_size, normalise, take_abs,
                         nan_on_prediction_change, **kwargs)

    def default_perturbation(self) -> Any:
        return UniformNoise(-0.2, 0.2)

    def score(self, chunk: Chunk) -> Tensor:
        """``‖a − ã‖₂ / ‖a‖₂`` per row (float64)."""
        a, ap = chunk.a.double(), chunk.ap.double()
        return flat_norm(a - ap) / flat_norm(a)


@register("metric", "avg_sensitivity")
class AvgSensitivity(MaxSensitivity):
    """``SENS_avg(x) = (1/n) Σ_j ‖g(x) − g(x̃_j)‖₂ / ‖g(x)‖₂`` (lower is better).

    Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations", NeurIPS 2019 (arXiv:1901.09392); Quantus 0.6's ``AvgSensitivity``: the
    Monte-Carlo mean (``nanmean``) of the same ratio as :class:`MaxSensitivity`, same defaults.

    Shapes: ``update(model, x [B, C, H, W], y [B], index [B])``; ``per_sample → [B]``.
    """

    name = "avg_sensitivity"
    reduction = "mean"


@register("metric", "local_lipschitz_estimate")
class LocalLipschitzEstimate(RobustnessMetric):
    """``L(x) = max_j ‖g(x) − g(x̃_j)‖₂ / (‖x − x̃_j‖₂ + 10⁻¹⁰)`` (lower is better).

    Alvarez-Melis & Jaakkola, "On the Robustness of Interpretability Methods", ICML 2018
    workshop (arXiv:1806.08049), as implemented by Quantus 0.6 (``LocalLipschitzEstimate``):
    Monte-Carlo maximum over n Gaussian perturbations. Quantus's defaults: n = 200,
    ``x̃ = x + N(0, 0.1²)``, attributions normalised by their max ``|·|`` (``normalise=True``),
    no absolute value. Difference: Quantus normalises by the maximum over the whole batch,
    robustattr per sample (equal to Quantus with ``normalise_func_kwargs={"normalise_axes":
    [1, 2, 3]}``), so a value does not depend on its batch.

    Args:
        attribution, n_samples, seed, internal_batch_size, normalise, take_abs,
        nan_on_prediction_change: see :class:`RobustnessMetric` (``normalise`` defaults to True).
        perturbation: default :class:`GaussianNoise` ``(std=0.1)``.

    Shapes: ``update(model, x [B, C, H, W], y [B], index [B])``; ``per_sample → [B]``.
    """

    name = "local_lipschitz_estimate"
    reduction = "max"

    def __init__(
        self,
        attribution: Attribution | None = None,
        n_samples: int = 200,
        perturbation: Any = None,
        seed: int = 0,
        internal_batch_size: int | None = 256,
        normalise: bool = True,
        take_abs: bool = False,
        nan_on_prediction_change: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(attribution, n_samples, perturbation, seed, internal_batch_size, normalise, take_abs,
                         nan_on_prediction_change, **kwargs)

    def default_perturbation(self) -> Any:
        return GaussianNoise(std=0.1)

    def score(self, chunk: Chunk) -> Tensor:
        """``‖a − ã‖₂ / (‖x − x̃‖₂ + 10⁻¹⁰)`` per row (float64)."""
        num = flat_norm(chunk.a.double() - chunk.ap.double())
        return num / (flat_norm(chunk.x.double() - chunk.xp.double()) + 1e-10)
