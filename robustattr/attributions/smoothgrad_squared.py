"""SmoothGrad²: the mean of the squared base attribution under input noise."""

from __future__ import annotations

import torch
from torch import Tensor

from robustattr.attributions.base import Attribution
from robustattr.attributions.smoothing import _NoiseChoice
from robustattr.registry import register


@register("attribution", "smoothgrad_squared")
class SmoothGradSquared(_NoiseChoice):
    """``SG²(x) = (1/n) Σ_i g₀(x + η_i)²`` (elementwise square).

    Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods in Deep
    Neural Networks", NeurIPS 2019 (arXiv:1806.10758); Captum's
    ``NoiseTunnel(nt_type="smoothgrad_sq")``.

    Noise ``η``: ``N(0, σ² I)`` (``noise="gaussian"``), uniform in the ℓ2 ball of radius r
    (``"l2"``) or in the cube ``[−r, r]^d`` (``"linf"``). The n copies are folded into the
    batch dimension (``[n·B, C, H, W]``), ``internal_batch_size`` rows at a time; a per-sample
    base state (an IG baseline ``[B, C, H, W]``) is repeated per copy. Differentiable with
    ``create_graph=True`` when the base is. A fixed draw (common random numbers) is used with
    ``attribute_with_noise(model, x, y, noise)``, ``noise = sample_noise(x)``.

    Args:
        noise: ``"gaussian"`` (default), ``"l2"`` or ``"linf"``.
        sigma: Gaussian standard deviation in pixel units (default 0.15).
        radius: ball/cube radius r in pixel units (default 0.5; used by ``"l2"``/``"linf"``).
        n_samples: n (default 50).
        base: ``g₀`` (default :class:`Saliency`).
        internal_batch_size: rows per chunk of the folded batch (``None``: all at once).
        generator: explicit ``torch.Generator`` for the noise; or
        seed: seed of a generator created on the input's device on first use.

    Shapes: ``[B, C, H, W] → [B, C, H, W]`` (non-negative).
    """

    def __init__(
        self,
        noise: str = "gaussian",
        sigma: float = 0.15,
        radius: float = 0.5,
        n_samples: int = 50,
        base: Attribution | None = None,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(noise, sigma, radius, n_samples, base, internal_batch_size, generator, seed)

    def _reduce(self, g: Tensor) -> Tensor:
        """Mean of squares over the n copies: ``[n, B, ...] → [B, ...]``."""
        return g.pow(2).mean(dim=0)
