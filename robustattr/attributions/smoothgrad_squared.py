"""SmoothGrad²: the mean of the squared base attribution under input noise."""

from __future__ import annotations

from torch import Tensor

from robustattr.attributions.smoothing import _NoiseChoice
from robustattr.registry import register


@register("attribution", "smoothgrad_squared")
class SmoothGradSquared(_NoiseChoice):
    """``SG²(x) = (1/n) Σ_i g₀(x + η_i)²`` (elementwise square).

    Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods in Deep
    Neural Networks", NeurIPS 2019 (arXiv:1806.10758); Captum's
    ``NoiseTunnel(nt_type="smoothgrad_sq")``.

    Noise, folding into the batch, arguments and shapes are those of
    :class:`~robustattr.attributions.VarGrad` (Gaussian, ℓ2-ball or ℓ∞-cube noise; ``n_samples``
    copies folded into ``[n·B, C, H, W]``; differentiable when the base is; a fixed draw via
    ``attribute_with_noise(model, x, y, noise)``). Shapes: ``[B, C, H, W] → [B, C, H, W]``
    (non-negative).
    """

    def _reduce(self, g: Tensor) -> Tensor:
        """Mean of squares over the n copies: ``[n, B, ...] → [B, ...]``."""
        return g.pow(2).mean(dim=0)
