"""VarGrad: the variance of a base attribution under input noise."""

from __future__ import annotations

from torch import Tensor

from robustattr.attributions.smoothing import _NoiseChoice
from robustattr.registry import register


@register("attribution", "vargrad")
class VarGrad(_NoiseChoice):
    """``VG(x) = (1/n) Σ_i (g₀(x + η_i) − ḡ)²`` with ``ḡ = (1/n) Σ_i g₀(x + η_i)`` (elementwise).

    Adebayo, Gilmer, Goodfellow & Kim, "Local Explanation Methods for Deep Neural Networks
    Lack Sensitivity to Parameter Values", ICLR 2018 workshop (arXiv:1810.03307); Captum's
    ``NoiseTunnel(nt_type="vargrad")``. The population variance (1/n, not 1/(n−1)), as in
    Captum, which writes it ``E[g²] − E[g]²``; the centred form used here is the same number
    without the cancellation.

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

    def _reduce(self, g: Tensor) -> Tensor:
        """Population variance over the n copies: ``[n, B, ...] → [B, ...]``."""
        return (g - g.mean(dim=0, keepdim=True)).pow(2).mean(dim=0)
