"""Relative Input / Output / Representation Stability (Agarwal et al. 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attributions import Attribution
from robustattr.metrics.robustness.base import Chunk, RobustnessMetric, UniformNoise, flat_norm
from robustattr.registry import register

__all__ = ["RelativeInputStability", "RelativeOutputStability", "RelativeRepresentationStability"]


def _relative_change(u: Tensor, v: Tensor, eps: float) -> Tensor:
    """``‖(u − v) / (u + eps·1[u = 0])‖₂`` per row (the elementwise percent change, float64)."""
    u, v = u.double(), v.double()
    return flat_norm((u - v) / (u + (u == 0).to(u.dtype) * eps))


def _guard(d: Tensor, eps: float) -> Tensor:
    """``d + eps·1[d = 0]``: Quantus's guard against a zero denominator."""
    return d + (d == 0).to(d.dtype) * eps


class _RelativeStability(RobustnessMetric):
    """Shared defaults: n = 200, ``x̃ = x + U(0.02, 0.2)^d``, NaN when the prediction changes."""

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
        nan_on_prediction_change: bool = True,
        eps_min: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        if eps_min <= 0:
            raise ValueError(f"eps_min must be > 0, got {eps_min}")
        super().__init__(attribution, n_samples, perturbation, seed, internal_batch_size, normalise, take_abs,
                         nan_on_prediction_change, **kwargs)
        self.eps_min = eps_min

    def default_perturbation(self) -> Any:
        return UniformNoise(0.02, 0.2)

    def numerator(self, chunk: Chunk) -> Tensor:
        """``‖(g(x) − g(x̃)) / g(x)‖₂`` with zero entries of ``g(x)`` replaced by ``eps_min``."""
        return _relative_change(chunk.a, chunk.ap, self.eps_min)


@register("metric", "relative_input_stability")
class RelativeInputStability(_RelativeStability):
    """``RIS(x) = max_j ‖(g(x) − g(x̃_j)) / g(x)‖₂ / max(‖(x − x̃_j) / x‖₂, ε)`` (lower is better).

    Agarwal, Johnson, Pawelczyk, Krishna, Saxena, Zitnik & Lakkaraju, "Rethinking Stability
    for Attribution-based Explanations", ICLR 2022 PAIR2Struct workshop (arXiv:2203.06877), as
    implemented by Quantus 0.6 (``RelativeInputStability``): divisions are elementwise, zero
    entries of a divisor are replaced by ``eps_min`` = 10⁻⁶ (so the black pixels of digits
    dominate ``‖(x − x̃)/x‖``), a zero denominator norm becomes ``eps_min``, norms are
    Frobenius over all non-batch dims. Quantus's defaults: n = 200, ``x̃ = x + U(0.02, 0.2)^d``
    (positive noise only), NaN for a sample as soon as one perturbation changes its predicted
    class (``nan_on_prediction_change=True``), no normalisation, no absolute value.

    Args:
        eps_min: ε (default 10⁻⁶); the rest as in :class:`RobustnessMetric`.

    Shapes: ``update(model, x [B, C, H, W], y [B], index [B])``; ``per_sample → [B]``.
    """

    name = "relative_input_stability"

    def score(self, chunk: Chunk) -> Tensor:
        return self.numerator(chunk) / _guard(_relative_change(chunk.x, chunk.xp, self.eps_min), self.eps_min)


@register("metric", "relative_output_stability")
class RelativeOutputStability(_RelativeStability):
    """``ROS(x) = max_j ‖(g(x) − g(x̃_j)) / g(x)‖₂ / max(‖f(x) − f(x̃_j)‖₂, ε)`` with logits f (lower is better).

    Agarwal et al., "Rethinking Stability for Attribution-based Explanations",
    arXiv:2203.06877; Quantus 0.6's ``RelativeOutputStability`` (logits, since its
    ``softmax=False`` default), with the defaults of :class:`RelativeInputStability`.

    Shapes: ``update(model, x [B, C, H, W], y [B], index [B])``; ``per_sample → [B]``.
    """

    name = "relative_output_stability"

    def needs_forward(self) -> bool:
        return True

    def score(self, chunk: Chunk) -> Tensor:
        assert chunk.out_x is not None and chunk.out_xp is not None
        den = torch.linalg.vector_norm(chunk.out_x[0].double() - chunk.out_xp[0].double(), dim=1)
        return self.numerator(chunk) / _guard(den, self.eps_min)


def default_representation_layers(model: nn.Module) -> list[str]:
    """Quantus's default layers: every submodule except containers of the model's own class and ``nn.Sequential``."""
    return [
        name for name, m in model.named_modules()
        if name and not isinstance(m, (type(model), nn.Sequential))
    ]


@register("metric", "relative_representation_stability")
class RelativeRepresentationStability(_RelativeStability):
    """``RRS(x) = max_j ‖(g(x) − g(x̃_j)) / g(x)‖₂ / max(‖(L(x) − L(x̃_j)) / L(x)‖₂, ε)`` (lower is better).

    Agarwal et al., "Rethinking Stability for Attribution-based Explanations",
    arXiv:2203.06877; Quantus 0.6's ``RelativeRepresentationStability``. ``L(x)`` concatenates
    the flattened outputs of the chosen layers in call order (a module called twice
    contributes twice). Default layers, as in Quantus: every submodule except ``nn.Sequential``
    containers and modules of the model's own class. Difference: the outputs are copied
    when the layer returns them; Quantus keeps NumPy views of CPU tensors, so a later
    in-place operation (timm's ``ReLU(inplace=True)`` after a BatchNorm) changes what it
    stores. Defaults otherwise as in :class:`RelativeInputStability`.

    Args:
        layers: dotted module paths (as in ``model.named_modules()``) or None for the default.
        eps_min, and the rest: as in :class:`RelativeInputStability`.

    Shapes: ``update(model, x [B, C, H, W], y [B], index [B])``; ``per_sample → [B]``.
    """

    name = "relative_representation_stability"

    def __init__(self, attribution: Attribution | None = None, layers: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(attribution, **kwargs)
        self.layers = list(layers) if layers is not None else None

    def needs_forward(self) -> bool:
        return True

    def forward_outputs(self, model: nn.Module, z: Tensor) -> tuple[Tensor, ...]:
        """``(logits [N, K], L(z) [N, D])`` with hooks on the chosen layers (removed afterwards)."""
        names = self.layers if self.layers is not None else default_representation_layers(model)
        if not names:
            raise ValueError("no representation layers selected")
        feats: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, Tensor):
                feats.append(out.detach().reshape(out.shape[0], -1).clone())

        handles = []
        try:
            for name in names:
                try:
                    module = model.get_submodule(name)
                except AttributeError as err:
                    raise ValueError(f"layers: {name!r} is not a submodule of {type(model).__name__}") from err
                handles.append(module.register_forward_hook(hook))
            with torch.no_grad():
                logits = model(z)
        finally:
            for h in handles:
                h.remove()
        if not feats:
            raise ValueError(f"none of the layers {names} produced a tensor output")
        return logits, torch.cat(feats, dim=1)

    def score(self, chunk: Chunk) -> Tensor:
        assert chunk.out_x is not None and chunk.out_xp is not None
        den = _relative_change(chunk.out_x[1], chunk.out_xp[1], self.eps_min)
        return self.numerator(chunk) / _guard(den, self.eps_min)
