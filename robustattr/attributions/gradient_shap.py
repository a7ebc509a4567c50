"""GradientSHAP: expected gradients × (input − baseline) over random baselines and noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from robustattr.attributions.base import (
    Attribution,
    checked_attribution,
    chunked_rows,
    logit_input_grad,
)
from robustattr.registry import register
from robustattr.utils import contract


class GradientSHAPDraw(NamedTuple):
    """One draw of GradientSHAP's randomness for a batch of B samples, n draws each.

    Attributes:
        noise: ``[n, B, C, H, W]`` Gaussian input noise ``ε``.
        baseline_index: ``[n, B]`` int64 rows of the baseline distribution.
        alpha: ``[n, B]`` path positions ``α ~ U(0, 1)``.
    """

    noise: Tensor
    baseline_index: Tensor
    alpha: Tensor


@register("attribution", "gradient_shap")
class GradientSHAP(Attribution):
    """``GS(x) = (1/n) Σ_i (x̃_i − b_i) ⊙ ∇f_y(b_i + α_i (x̃_i − b_i))``, ``x̃_i = x + ε_i``.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017
    (arXiv:1705.07874); the estimator is Captum's ``GradientShap``: per draw i a baseline
    ``b_i`` uniformly from the baseline distribution, Gaussian noise ``ε_i ~ N(0, σ² I)``
    added to the input and a path position ``α_i ~ U(0, 1)``. In expectation it is Integrated
    Gradients averaged over baselines (expected gradients).

    The n draws are folded into the batch dimension (``[n·B, C, H, W]``) and evaluated
    ``internal_batch_size`` rows at a time; differentiable with ``create_graph=True`` (w.r.t.
    the parameters and x; the draw is held fixed). Common random numbers:
    ``draw = sample_noise(x, generators)`` and ``attribute_with_noise(model, x, y, draw)``;
    with per-sample generators (one per sample, seeded by ``seed + dataset index``) a sample's
    draw does not depend on its batch.

    Args:
        baselines: the baseline distribution ``[M, C, H, W]`` (or one baseline ``[C, H, W]``),
            or a float (a constant image; the default 0.0 is the black image).
        n_samples: n, draws per sample (Captum's default 5).
        sigma: standard deviation of the input noise (Captum's ``stdevs``, default 0.0).
        internal_batch_size: rows per chunk of the folded batch (``None``: all at once).
        generator: explicit ``torch.Generator``; or
        seed: seed of a generator created on the input's device on first use.

    Shapes: ``[B, C, H, W] → [B, C, H, W]``.
    """

    def __init__(
        self,
        baselines: float | Tensor = 0.0,
        n_samples: int = 5,
        sigma: float = 0.0,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        if isinstance(baselines, Tensor) and baselines.dim() not in (3, 4):
            raise ValueError(f"baselines must be [M, C, H, W] or [C, H, W], got shape {tuple(baselines.shape)}")
        self.baselines = baselines
        self.n_samples = n_samples
        self.sigma = sigma
        self.internal_batch_size = internal_batch_size
        self.seed = seed
        self._generator = generator

    def _baseline_bank(self, x: Tensor) -> Tensor:
        """The baseline distribution as ``[M, C, H, W]`` on x's device and dtype."""
        b = torch.as_tensor(self.baselines, dtype=x.dtype, device=x.device)
        if b.dim() == 0:
            b = b.expand(1, *x.shape[1:])
        elif b.dim() == 3:
            b = b.unsqueeze(0)
        if tuple(b.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"baselines must be [M, {', '.join(map(str, x.shape[1:]))}], got {tuple(b.shape)}")
        return b

    def _draw_one(self, n: int, shape: tuple[int, ...], M: int, g: torch.Generator | None, x: Tensor) -> GradientSHAPDraw:
        noise = self.sigma * torch.randn((n, *shape), generator=g, device=x.device, dtype=x.dtype)
        index = torch.randint(M, (n,), generator=g, device=x.device)
        alpha = torch.rand((n,), generator=g, device=x.device, dtype=x.dtype)
        return GradientSHAPDraw(noise, index, alpha)

    def sample_noise(self, x: Tensor, generators: Sequence[torch.Generator] | None = None) -> GradientSHAPDraw:
        """Draw the randomness for ``x: [B, C, H, W]``: noise ``[n, B, ...]``, indices and α ``[n, B]``.

        With ``generators`` (one per sample) sample b's n draws come from ``generators[b]``
        alone (noise, then baseline indices, then α); otherwise from the instance's stream.
        """
        n, B, shape = self.n_samples, x.shape[0], tuple(x.shape[1:])
        M = self._baseline_bank(x).shape[0]
        if generators is not None:
            if len(generators) != B:
                raise ValueError(f"generators must hold one generator per sample ({B}), got {len(generators)}")
            cols = [self._draw_one(n, shape, M, g, x) for g in generators]
            return GradientSHAPDraw(*(torch.stack(parts, dim=1) for parts in zip(*cols, strict=True)))
        if self._generator is None and self.seed is not None:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        d = self._draw_one(n * B, shape, M, self._generator, x)
        return GradientSHAPDraw(d.noise.view(n, B, *shape), d.baseline_index.view(n, B), d.alpha.view(n, B))

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return self.attribute_with_noise(model, x, y, self.sample_noise(x), create_graph)

    def attribute_with_noise(
        self, model: nn.Module, x: Tensor, y: Tensor, noise: GradientSHAPDraw, create_graph: bool = False,
        *, check_range: bool = True,
    ) -> Tensor:
        """GradientSHAP with a fixed draw (see :meth:`sample_noise`); ``[B, C, H, W]``.

        A public entry like ``__call__``: the input contract is checked on ``x`` (never on the
        noisy or interpolated points); ``check_range=False`` lets pixels outside [0, 1] through.
        """
        eps, index, alpha = noise
        n, B = index.shape[0], x.shape[0]
        if eps.shape != (n, *x.shape) or index.shape != (n, B) or alpha.shape != (n, B):
            raise ValueError(
                f"draw must hold noise [n, *x.shape] and baseline_index/alpha [n, B={B}], got "
                f"{tuple(eps.shape)}, {tuple(index.shape)}, {tuple(alpha.shape)}"
            )
        with contract.range_option(check_range):
            return checked_attribution(lambda: self._with_draw(model, x, y, noise, create_graph), x, y)

    def _with_draw(self, model: nn.Module, x: Tensor, y: Tensor, noise: GradientSHAPDraw, create_graph: bool) -> Tensor:
        eps, index, alpha = noise
        n, B = index.shape[0], x.shape[0]
        bank = self._baseline_bank(x)
        shape = (n * B,) + (1,) * (x.dim() - 1)
        xt = (x.unsqueeze(0) + eps).reshape(n * B, *x.shape[1:])  # noisy inputs x̃
        b = bank[index.reshape(-1).to(bank.device)]
        a = alpha.reshape(shape).to(x.dtype)
        z = a * xt + (1.0 - a) * b  # Captum's scaling: α x̃ + (1 − α) b
        yy = y.repeat(n)
        grads = chunked_rows(lambda s: logit_input_grad(model, z[s], yy[s], create_graph), n * B, self.internal_batch_size)
        return ((xt - b) * grads).view(n, B, *x.shape[1:]).mean(dim=0)
