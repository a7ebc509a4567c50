"""Continuity under horizontal translations (Montavon et al. 2018), Quantus 0.6's definition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attributions import Attribution
from robustattr.metrics.robustness.base import Chunk, RobustnessMetric, flat_norm
from robustattr.registry import register

__all__ = ["Continuity", "translate_x", "translation_shifts"]


def translate_x(x: Tensor, shift: int) -> Tensor:
    """Shift ``x: [B, C, H, W]`` by ``shift`` pixels along the width, filling with each sample's minimum.

    ``shift > 0`` moves the content right, ``< 0`` left; ``|shift| ≥ W`` gives a constant image.
    The fill value is ``min(x_b)`` over all channels and pixels (Quantus's ``"black"`` baseline).
    """
    B, W = x.shape[0], x.shape[-1]
    fill = x.reshape(B, -1).amin(dim=1).view(B, *([1] * (x.dim() - 1))).expand_as(x)
    if shift == 0:
        return x.clone()
    k = min(abs(shift), W)
    out = fill.clone()
    if shift > 0:
        out[..., k:] = x[..., : W - k]
    else:
        out[..., : W - k] = x[..., k:]
    return out


def translation_shifts(width: int, nr_steps: int) -> list[int]:
    """Quantus's shifts: ``dx = (2W + 1) // nr_steps``, shifts ``−W + k·dx`` for ``k = 1..nr_steps``."""
    dx = (2 * width + 1) // nr_steps
    return [-width + k * dx for k in range(1, nr_steps + 1)]


@register("metric", "continuity")
class Continuity(RobustnessMetric):
    """``C(x) = max_t ‖a(x) − a(T_t x)‖₁ / (‖x − T_t x‖₂ + 10⁻⁹)`` over horizontal translations ``T_t`` (lower is better).

    Montavon, Samek & Müller, "Methods for Interpreting and Understanding Deep Neural
    Networks", Digital Signal Processing 73 (2018), arXiv:1706.07979; the translation-based
    form of Quantus 0.6 (``Continuity``): ``nr_steps`` shifts ``t = −W + k·dx``,
    ``dx = (2W + 1) // nr_steps`` (k = 1..nr_steps), the vacated columns filled with the
    sample's minimum, ``a`` = the attribution normalised by its max ``|·|`` and then taken in
    absolute value (Quantus's defaults ``normalise=True, abs=True``). With
    ``nan_on_prediction_change`` a translation whose predicted class differs from ``y`` (not
    from the clean prediction — Quantus's choice) makes the sample NaN. Deterministic: the
    translations are the perturbations (``x_perturbed`` may still inject others). Differences:
    normalisation per sample instead of over the whole batch; the identity shift scores 0
    (see :meth:`score`).

    Args:
        nr_steps: number of translations (default 28).
        attribution, seed, internal_batch_size, normalise, take_abs,
        nan_on_prediction_change: see :class:`RobustnessMetric`.

    Shapes: ``update(model, x [B, C, H, W], y [B])``; ``per_sample → [B]``.
    """

    name = "continuity"
    reduction = "max"

    def __init__(
        self,
        attribution: Attribution | None = None,
        nr_steps: int = 28,
        internal_batch_size: int | None = 256,
        normalise: bool = True,
        take_abs: bool = True,
        nan_on_prediction_change: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(nr_steps, int) or nr_steps < 1:
            raise ValueError(f"nr_steps must be an integer >= 1, got {nr_steps!r}")
        super().__init__(attribution, nr_steps, None, 0, internal_batch_size, normalise, take_abs,
                         nan_on_prediction_change, **kwargs)
        self.nr_steps = nr_steps

    def perturb(self, x: Tensor, index: Tensor | Sequence[int] | None = None) -> Tensor:
        """``[nr_steps, B, C, H, W]``: the translated copies (``index`` is unused: no randomness)."""
        return torch.stack([translate_x(x, t) for t in translation_shifts(x.shape[-1], self.nr_steps)])

    def changed(self, chunk: Chunk) -> Tensor:
        assert chunk.out_xp is not None
        return chunk.out_xp[0].argmax(dim=1) != chunk.y

    def forward_outputs(self, model: nn.Module, z: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return (model(z),)

    def score(self, chunk: Chunk) -> Tensor:
        """``‖a − ã‖₁ / (‖x − x̃‖₂ + 10⁻⁹)`` per row (float64); 0 for an unchanged input.

        The identity shift (it occurs when ``W`` is a multiple of ``dx``) scores 0, as in Quantus
        where both maps come from identical calls; robustattr explains it in another batch, and
        rounding differences divided by 10⁻⁹ would otherwise dominate the maximum.
        """
        num = flat_norm(chunk.a.double() - chunk.ap.double(), p=1)
        den = flat_norm(chunk.x.double() - chunk.xp.double())
        return torch.where(den == 0, torch.zeros_like(num), num / (den + 1e-9))
