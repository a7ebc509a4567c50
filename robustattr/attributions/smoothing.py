"""Noise-averaged attributions: SmoothGrad (Gaussian) and UniformSmoothed (ℓ2 ball / ℓ∞ cube).

``h(x) = (1/n) Σ_i g₀(x + η_i)``; the n noisy copies are folded into the batch dimension
(``[n·B, C, H, W]``) and evaluated ``internal_batch_size`` rows at a time. The same machinery
(:class:`_NoiseAveraged`) serves VarGrad and SmoothGrad², which only change the reduction
over the n copies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, checked_attribution, chunked_rows
from robustattr.attributions.saliency import Saliency
from robustattr.registry import register
from robustattr.utils import contract


def sample_l2_ball(
    n: int,
    shape: tuple[int, ...],
    radius: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Exact uniform samples from the ℓ2 ball ``B₂(0, r)`` in ``d = prod(shape)`` dimensions.

    ``η = r · U^{1/d} · Z / ‖Z‖₂`` with ``Z ~ N(0, I_d)``, ``U ~ U(0, 1)`` (the direction is
    uniform on the sphere, the radius has the ball's law).
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
    """Uniform samples from the cube ``[−r, r]^d`` (the "Uniform Gradient" of Wang et al., NeurIPS 2020, arXiv:2006.06643). ``[n, *shape]``."""
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
    """``h(x) = R_i g₀(x + η_i)`` with ``η`` from :meth:`sample_noise` and ``R`` = :meth:`_reduce`.

    ``R`` is the mean over the n noise copies (SmoothGrad, UniformSmoothed); VarGrad and
    SmoothGrad² override :meth:`_reduce`. The base attribution ``g₀`` sees the n copies folded
    into its batch, ``[n·B, C, H, W]`` (row ``i·B + b`` is copy i of sample b); per-sample state
    of ``g₀`` (a per-sample IG baseline ``[B, C, H, W]``) is repeated per copy through
    :meth:`Attribution.with_rows`.
    """

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

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        """Differentiable iff the base attribution is."""
        return self.base.differentiable

    def _gen(self, device: torch.device) -> torch.Generator | None:
        """The generator noise is drawn from: the given one, or one seeded once from ``seed``."""
        if self._generator is None and self.seed is not None:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def _draw(self, n: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def sample_noise(self, x: Tensor, generators: Sequence[torch.Generator] | None = None) -> Tensor:
        """Draw ``[n, B, C, H, W]`` noise (independent per sample and per draw).

        Args:
            x: the batch ``[B, C, H, W]`` (shape, device and dtype of the draw).
            generators: optional per-sample generators (one per sample, e.g. seeded by
                ``seed + dataset index``): column b is drawn from ``generators[b]`` alone,
                so a sample's noise does not depend on the rest of its batch. Without them
                the instance's stream (``generator``/``seed``, else the global RNG) is used.
        """
        B, shape = x.shape[0], tuple(x.shape[1:])
        if generators is not None:
            if len(generators) != B:
                raise ValueError(f"generators must hold one generator per sample ({B}), got {len(generators)}")
            cols = [self._draw(self.n_samples, shape, g, x.device, x.dtype) for g in generators]
            return torch.stack(cols, dim=1)
        eta = self._draw(self.n_samples * B, shape, self._gen(x.device), x.device, x.dtype)
        return eta.view(self.n_samples, B, *shape)

    def with_rows(self, rows: Tensor) -> Attribution:
        """A copy whose base follows ``rows`` (``self`` when the base has no per-sample state)."""
        base = self.base.with_rows(rows)
        if base is self.base:
            return self
        self._gen(rows.device)  # create the seeded stream once, so copies share (not restart) it
        out = copy.copy(self)
        out.base = base
        return out

    def _reduce(self, g: Tensor) -> Tensor:
        """Reduce the n copies ``[n, B, C, H, W] → [B, C, H, W]``: the mean."""
        return g.mean(dim=0)

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return self.attribute_with_noise(model, x, y, self.sample_noise(x), create_graph)

    def attribute_with_noise(
        self, model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, create_graph: bool = False, *, check_range: bool = True
    ) -> Tensor:
        """Reduce ``g₀(x + noise[i])`` over ``i``; ``noise: [n, B, C, H, W]`` (a fixed draw).

        Used with common random numbers: attacks on smoothed attributions and tests that
        compare against a reference with the same noise. A public entry like ``__call__``
        (the input contract is checked on ``x``, never on the noisy copies; ``check_range=False``
        lets pixels outside [0, 1] through).
        """
        if noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape:
            raise ValueError(f"noise must be [n, *x.shape]={('n', *x.shape)}, got {tuple(noise.shape)}")
        if create_graph and not self.differentiable:
            raise ValueError(f"create_graph=True is not supported: the base {type(self.base).__name__} is not differentiable")
        with contract.range_option(check_range):
            return checked_attribution(lambda: self._average(model, x, y, noise, create_graph), x, y)

    def _average(self, model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
        n, B = noise.shape[0], x.shape[0]
        z = (x.unsqueeze(0) + noise).reshape(n * B, *x.shape[1:])
        yy = y.repeat(n)
        rows = torch.arange(B, device=x.device).repeat(n)  # row i·B + b is a copy of sample b

        def run(s: slice) -> Tensor:
            return self.base.with_rows(rows[s])(model, z[s], yy[s], create_graph=create_graph)

        g = chunked_rows(run, n * B, self.internal_batch_size)
        return self._reduce(g.view(n, B, *x.shape[1:]))


_NOISES = ("gaussian", "l2", "linf")


class _NoiseChoice(_NoiseAveraged):
    """A noise-averaged attribution whose noise is chosen by name: Gaussian, ℓ2 ball or ℓ∞ cube."""

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
        if noise not in _NOISES:
            raise ValueError(f"noise must be one of {_NOISES}, got {noise!r}")
        if noise == "gaussian" and sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if noise != "gaussian" and radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        super().__init__(base, n_samples, internal_batch_size, generator, seed)
        self.noise = noise
        self.sigma = sigma
        self.radius = radius

    def _draw(self, n, shape, generator, device, dtype):  # type: ignore[no-untyped-def]
        if self.noise == "gaussian":
            return sample_gaussian(n, shape, self.sigma, generator, device, dtype)
        sampler = sample_l2_ball if self.noise == "l2" else sample_linf_cube
        return sampler(n, shape, self.radius, generator, device, dtype)


@register("attribution", "smoothgrad")
class SmoothGrad(_NoiseAveraged):
    """SmoothGrad: ``(1/n) Σ_i g₀(x + η_i)``, ``η ~ N(0, σ² I)``.

    Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise",
    ICML 2017 workshop (arXiv:1706.03825).

    Args:
        sigma: noise standard deviation in pixel units (default 0.15).
        n_samples: n (default 50).
        base: the attribution ``g₀`` averaged (default :class:`Saliency`). Per-sample state of
            the base, e.g. ``IntegratedGradients(baseline=<[B, C, H, W]>)``, is repeated for
            each of the n noisy copies of its sample.
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

    The ℓ2 ball is what the certified uniform smoothing of Wang & Kong, "Certified ℓ2
    Attribution Robustness via Uniformly Smoothed Attributions" (arXiv:2405.06361) averages
    over; the cube is the "Uniform Gradient" of Wang et al., "Smoothed Geometry for Robust
    Attribution", NeurIPS 2020 (arXiv:2006.06643).

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
