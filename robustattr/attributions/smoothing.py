"""Noise-averaged attributions: SmoothGrad (Gaussian) and UniformSmoothed (ℓ2 ball / ℓ∞ cube).

``h(x) = (1/n) Σ_i g₀(x + η_i)``; the n noisy copies are folded into the batch dimension
(``[n·B, C, H, W]``) and evaluated ``internal_batch_size`` rows at a time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, checked_attribution, chunked_rows
from robustattr.attributions.saliency import Saliency
from robustattr.registry import register


def sample_l2_ball(
    n: int,
    shape: tuple[int, ...],
    radius: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Exact uniform samples from the ℓ2 ball ``B₂(0, r)`` in ``d = prod(shape)`` dimensions.

    ``η = r · U^{1/d} · Z / ‖Z‖₂`` with ``Z ~ N(0, I_d)``, ``U ~ U(0, 1)`` (SPEC §1).
    The radial CDF is ``P(‖η‖ ≤ ρ) = (ρ/r)^d``. Returns ``[n, *shape]``.
    """
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    d = math.prod(shape)
    z = torch.randn((n, d), generator=generator, device=device, dtype=dtype)
    u = torch.rand((n, 1), generator=generator, device=device, dtype=dtype)
    # U^{1/d} in log space: exp(log(U)/d) is exact for any d (no 0**tiny surprises).
    scale = radius * torch.exp(torch.log(u) / d) / z.norm(dim=1, keepdim=True)
    return (z * scale).view(n, *shape)


def sample_linf_cube(
    n: int,
    shape: tuple[int, ...],
    radius: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform samples from the cube ``[−r, r]^d`` (seed 002's "Uniform Gradient"). ``[n, *shape]``."""
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    u = torch.rand((n, *shape), generator=generator, device=device, dtype=dtype)
    return (2.0 * u - 1.0) * radius


def sample_gaussian(
    n: int,
    shape: tuple[int, ...],
    sigma: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``η ~ N(0, σ² I)``, ``[n, *shape]``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return sigma * torch.randn((n, *shape), generator=generator, device=device, dtype=dtype)


class _NoiseAveraged(Attribution):
    """``h(x) = (1/n) Σ_i g₀(x + η_i)`` with ``η`` from :meth:`sample_noise`."""

    def __init__(
        self,
        base: Attribution | None,
        n_samples: int,
        internal_batch_size: int | None,
        generator: torch.Generator | None,
        seed: int | None,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        self.base = base if base is not None else Saliency()
        self.n_samples = n_samples
        self.internal_batch_size = internal_batch_size
        self.seed = seed
        self._generator = generator

    def _gen(self, device: torch.device) -> torch.Generator | None:
        """The generator noise is drawn from: the given one, or one seeded once from ``seed``."""
        if self._generator is None and self.seed is not None:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def _draw(self, n: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def sample_noise(self, x: Tensor) -> Tensor:
        """Draw ``[n, B, C, H, W]`` noise (independent per sample and per draw)."""
        B = x.shape[0]
        eta = self._draw(self.n_samples * B, tuple(x.shape[1:]), self._gen(x.device), x.device, x.dtype)
        return eta.view(self.n_samples, B, *x.shape[1:])

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return self.attribute_with_noise(model, x, y, self.sample_noise(x), create_graph)

    def attribute_with_noise(
        self, model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, create_graph: bool = False
    ) -> Tensor:
        """Average ``g₀(x + noise[i])`` over ``i``; ``noise: [n, B, C, H, W]`` (a fixed draw).

        Used with common random numbers: attacks on smoothed attributions and tests that
        compare against a reference with the same noise. A public entry like ``__call__``
        (the input contract is checked on ``x``, never on the noisy copies).
        """
        if noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape:
            raise ValueError(f"noise must be [n, *x.shape]={('n', *x.shape)}, got {tuple(noise.shape)}")
        return checked_attribution(lambda: self._average(model, x, y, noise, create_graph), x, y)

    def _average(self, model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
        n, B = noise.shape[0], x.shape[0]
        z = (x.unsqueeze(0) + noise).reshape(n * B, *x.shape[1:])
        yy = y.repeat(n)
        g = chunked_rows(lambda s: self.base(model, z[s], yy[s], create_graph=create_graph), n * B, self.internal_batch_size)
        return g.view(n, B, *x.shape[1:]).mean(dim=0)


@register("attribution", "smoothgrad")
class SmoothGrad(_NoiseAveraged):
    """SmoothGrad (Smilkov et al. 2017): ``(1/n) Σ_i g₀(x + η_i)``, ``η ~ N(0, σ² I)``.

    Args:
        sigma: noise standard deviation in pixel units (default 0.15).
        n_samples: n (default 50).
        base: the attribution ``g₀`` averaged (default :class:`Saliency`).
        internal_batch_size: rows per chunk of the folded ``[n·B, ...]`` batch.
        generator: explicit ``torch.Generator`` for the noise (reproducible); or
        seed: seed for a generator created on the input's device on first use.
    Shapes: ``[B, C, H, W] → [B, C, H, W]``.
    """

    def __init__(
        self,
        sigma: float = 0.15,
        n_samples: int = 50,
        base: Attribution | None = None,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        super().__init__(base, n_samples, internal_batch_size, generator, seed)
        self.sigma = sigma

    def _draw(self, n, shape, generator, device, dtype):  # type: ignore[no-untyped-def]
        return sample_gaussian(n, shape, self.sigma, generator, device, dtype)


@register("attribution", "uniform_smoothed")
class UniformSmoothed(_NoiseAveraged):
    """``(1/n) Σ_i g₀(x + η_i)`` with ``η ~ U(B₂(0, r))`` (``ball="l2"``) or ``U([−r, r]^d)`` (``"linf"``).

    The ℓ2 ball is what the certificate of seed 000 smooths over (SPEC §5); the cube is
    seed 002's "Uniform Gradient".

    Args:
        radius: r, in pixel units.
        n_samples: n (default 50).
        ball: ``"l2"`` (exact sampler) or ``"linf"``.
        base, internal_batch_size, generator, seed: as in :class:`SmoothGrad`.
    Shapes: ``[B, C, H, W] → [B, C, H, W]``.
    """

    def __init__(
        self,
        radius: float = 0.5,
        n_samples: int = 50,
        ball: str = "l2",
        base: Attribution | None = None,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        if ball not in ("l2", "linf"):
            raise ValueError(f"ball must be 'l2' or 'linf', got {ball!r}")
        super().__init__(base, n_samples, internal_batch_size, generator, seed)
        self.radius = radius
        self.ball = ball

    def _draw(self, n, shape, generator, device, dtype):  # type: ignore[no-untyped-def]
        sampler = sample_l2_ball if self.ball == "l2" else sample_linf_cube
        return sampler(n, shape, self.radius, generator, device, dtype)
