"""The projected-ascent core shared by every attribution attack.

One loop, many objectives: an attack supplies a differentiable *objective* ``J(x̃) : [B]``
(maximised, evaluated on the softplus surrogate) and a *criterion* ``c(x̃) : [B]``
(evaluated on the ORIGINAL network, used to keep the best iterate and reported). The core

1. skips samples the original network misclassifies (``skipped_misclassified``),
2. for each restart: optional random start in the ball, then ``steps`` iterations of
   ``x̃ ← Π_{B_p(x, ε) ∩ [0,1]}(x̃ + α·s)`` with ``s = sign(∇J)`` (ℓ∞) or ``∇J/‖∇J‖₂`` (ℓ2),
3. after every step checks the label on the original network and keeps, per sample, the
   label-preserving iterate with the best criterion (restarts keep the best overall),
4. returns :class:`AttackResult` with ``x_adv`` detached in ``B_p(x, ε) ∩ [0, 1]``.

Every call runs the model in eval mode (BatchNorm uses its running statistics, dropout is off,
so a sample's result does not depend on the rest of its batch) and restores every submodule's
mode afterwards. The input contract (:mod:`robustattr.utils.contract`) is checked once per
call: ``x`` finite in [0, 1], ``y`` classes in ``[0, K)``, model output ``[B, K]`` and finite,
the criterion at the clean input finite; a violation raises ``ValueError`` naming the samples.
The surrogate (``surrogate_beta``) replaces ReLU by ``Softplus(β)`` and, unless
``smooth_pool=False``, max-pooling by log-mean-exp pooling with the same β.

Cost per step: one double backward on the surrogate (objective gradient), one forward on
the original network (label check) plus whatever the criterion needs (usually one
attribution on the original network).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attacks.pgd import ascent_direction, project
from robustattr.attributions.base import Attribution
from robustattr.attributions.smoothing import sample_l2_ball, sample_linf_cube
from robustattr.models.activation import softplus_surrogate
from robustattr.utils import contract
from robustattr.utils.modes import eval_mode
from robustattr.utils.rng import per_sample_generators

__all__ = ["AttackResult", "ProjectedAscentAttack", "project", "RandomStreams", "attribution_with_noise"]


@dataclass
class AttackResult:
    """Per-sample outcome of an attack.

    Attributes:
        x_adv: ``[B, C, H, W]`` detached adversarial inputs in ``B_p(x, ε) ∩ [0, 1]`` (the
            clean input where no label-preserving improvement was found or the sample was skipped).
        success: ``[B]`` bool — a label-preserving iterate improved the criterion over the clean input.
        skipped_misclassified: ``[B]`` bool — the original network misclassified ``x``; not attacked.
        criterion: ``[B]`` criterion of the returned iterate on the original network.
    """

    x_adv: Tensor
    success: Tensor
    skipped_misclassified: Tensor
    criterion: Tensor


class RandomStreams:
    """Random numbers for an attack call: per-sample streams (batch/rank invariant) or one generator.

    With ``sample_seeds: [B]`` each sample draws from its own generator (``seed_b``), so a
    sample's random start and noise do not depend on which other samples share its batch or
    rank. Otherwise one generator seeded by ``seed`` (or the global RNG if ``seed`` is None).
    """

    def __init__(self, x: Tensor, seed: int | None, sample_seeds: Tensor | Sequence[int] | None) -> None:
        self.device, self.dtype, self.B = x.device, x.dtype, x.shape[0]
        self.per_sample = per_sample_generators(sample_seeds, x.device) if sample_seeds is not None else None
        if self.per_sample is not None and len(self.per_sample) != self.B:
            raise ValueError(f"sample_seeds must have {self.B} entries, got {len(self.per_sample)}")
        self.gen = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None

    def draw(self, sampler: Callable[..., Tensor], n: int, shape: tuple[int, ...], **kw: Any) -> Tensor:
        """``[n, B, *shape]`` from ``sampler(n, shape, generator=…, device=…, dtype=…, **kw)``."""
        if self.per_sample is None:
            out = sampler(n * self.B, shape, generator=self.gen, device=self.device, dtype=self.dtype, **kw)
            return out.view(n, self.B, *shape)
        cols = [sampler(n, shape, generator=g, device=self.device, dtype=self.dtype, **kw) for g in self.per_sample]
        return torch.stack(cols, dim=1)

    def uniform(self, shape: tuple[int, ...]) -> Tensor:
        """``[B, *shape]`` uniform in [0, 1)."""

        def u(n: int, shp: tuple[int, ...], generator=None, device=None, dtype=None):  # type: ignore[no-untyped-def]
            return torch.rand((n, *shp), generator=generator, device=device, dtype=dtype)

        return self.draw(u, 1, shape)[0]


def attribution_noise(attribution: Attribution, x: Tensor, streams: RandomStreams) -> Any:
    """A fixed noise draw for a randomised attribution (None if it draws no noise).

    Common random numbers: the same draw is used for ``g(x)`` and every ``g(x̃)`` of a restart.
    Attributions with ``sample_noise`` and ``attribute_with_noise`` are randomised: the
    noise-averaged ones (SmoothGrad, Uniform Gradient, …) return ``[n, B, C, H, W]``,
    GradientSHAP a :class:`~robustattr.attributions.gradient_shap.GradientSHAPDraw`. With
    per-sample streams (``sample_seeds``) the draw is ``sample_noise(x, generators=streams.per_sample)``:
    sample b's draw comes from its own generator alone, so results do not depend on batching.
    Otherwise (or if ``sample_noise`` takes no ``generators``) ``attribution.sample_noise(x)``.
    """
    sample = getattr(attribution, "sample_noise", None)
    if sample is None or not hasattr(attribution, "attribute_with_noise"):
        return None
    if streams.per_sample is not None and "generators" in inspect.signature(sample).parameters:
        return sample(x, generators=streams.per_sample)
    return sample(x)


def attribution_with_noise(
    attribution: Attribution, model: nn.Module, x: Tensor, y: Tensor, noise: Any, create_graph: bool = False
) -> Tensor:
    """``g(x)`` with a fixed noise draw (:func:`attribution_noise`) when the attribution is randomised; ``[B, C, H, W]``."""
    if noise is None:
        return attribution(model, x, y, create_graph=create_graph)
    return attribution.attribute_with_noise(model, x, y, noise, create_graph=create_graph)  # type: ignore[attr-defined]


class ProjectedAscentAttack:
    """Base class: projected sign/normalised ascent with label checks and best-iterate tracking.

    Subclasses implement :meth:`prepare_call` / :meth:`prepare_restart` (context: reference
    maps, fixed noise draws), :meth:`objective` (``[B]``, maximised, differentiable w.r.t. ``x̃``,
    on the surrogate) and :meth:`criterion` (``[B]``, on the original network, no grad
    needed). ``criterion_sense`` is ``"max"`` or ``"min"`` (which direction is a better attack).

    Args:
        eps: radius ε of the ball (pixel units).
        steps: ascent steps per restart.
        step_size: α.
        norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised steps).
        restarts: independent runs; the best label-preserving iterate over all is kept.
        random_start: start uniformly in the ball (ℓ∞ cube / exact ℓ2 ball) instead of at x.
        surrogate_beta: β of the softplus surrogate used for the ascent (None: the model as is).
        seed: seed of the random start / noise when no per-sample seeds are given.
        smooth_pool: the surrogate also replaces max-pooling by log-mean-exp pooling (default True).
    """

    criterion_sense: str = "max"

    def __init__(
        self,
        eps: float,
        steps: int,
        step_size: float,
        norm: str = "linf",
        restarts: int = 1,
        random_start: bool = False,
        surrogate_beta: float | None = 10.0,
        seed: int | None = None,
        smooth_pool: bool = True,
    ) -> None:
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if surrogate_beta is not None and surrogate_beta <= 0:
            raise ValueError(f"surrogate_beta must be > 0 or None, got {surrogate_beta}")
        self.eps, self.steps, self.step_size, self.norm = float(eps), int(steps), float(step_size), norm
        self.restarts, self.random_start, self.surrogate_beta, self.seed = restarts, random_start, surrogate_beta, seed
        self.smooth_pool = smooth_pool

    # ---- to implement --------------------------------------------------------------
    def prepare_call(self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams) -> dict[str, Any]:
        """Context shared by all restarts (what the criterion needs: references, a fixed noise draw)."""
        return {}

    def prepare_restart(
        self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams, ctx: dict[str, Any]
    ) -> dict[str, Any]:
        """Entries added to the context for one restart (e.g. the ascent's noise draw)."""
        return {}

    def objective(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        """``[B]`` maximised by the ascent; differentiable w.r.t. ``x_adv``."""
        raise NotImplementedError

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        """``[B]`` on the original network; better means larger if ``criterion_sense == "max"``."""
        raise NotImplementedError

    def direction(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any], streams: RandomStreams) -> Tensor:
        """Ascent direction before the sign/normalisation: ``∇_{x̃} Σ_b J_b(x̃)``; ``[B, C, H, W]``."""
        with torch.enable_grad():
            z = x_adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.objective(surrogate, z, y, ctx).sum(), z)
        return grad

    # ---- machinery -------------------------------------------------------------------
    def _better(self, new: Tensor, old: Tensor) -> Tensor:
        return new > old if self.criterion_sense == "max" else new < old

    def _step(self, grad: Tensor) -> Tensor:
        return ascent_direction(grad, self.norm)

    def _random_start(self, x: Tensor, streams: RandomStreams) -> Tensor:
        shape = tuple(x.shape[1:])
        if self.norm == "linf":
            delta = streams.draw(sample_linf_cube, 1, shape, radius=self.eps)[0]
        else:
            delta = streams.draw(sample_l2_ball, 1, shape, radius=self.eps)[0]
        return (x + delta).clamp(0.0, 1.0)

    @torch.no_grad()
    def _predict(self, model: nn.Module, x: Tensor) -> Tensor:
        out = model(x)
        contract.check_model_output(out, x.shape[0])
        return out.argmax(dim=1)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, sample_seeds: Tensor | Sequence[int] | None = None,
        *, check_range: bool = True,
    ) -> AttackResult:
        """Attack ``x: [B, C, H, W]`` (in [0, 1]) with labels ``y: [B]``.

        Args:
            model: the original network (used for labels and the reported criterion).
            x, y: clean inputs and labels.
            sample_seeds: optional per-sample seeds ``[B]`` (e.g. ``seed + dataset_index``) so
                that random starts and noise do not depend on batching or DDP sharding.
            check_range: ``False`` lets pixels outside [0, 1] through the input check
                (:func:`robustattr.utils.contract.range_option`; iterates are still projected onto [0, 1]).

        Raises:
            ValueError: the input contract is violated (see the module docstring).
        """
        with contract.range_option(check_range), contract.entry() as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y)
            return self._run(model, x.detach(), y, sample_seeds)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, sample_seeds: Tensor | Sequence[int] | None) -> AttackResult:
        beta = self.surrogate_beta
        surrogate = softplus_surrogate(model, beta, smooth_pool=self.smooth_pool) if beta is not None else model
        streams = RandomStreams(x, self.seed, sample_seeds)
        skipped = self._predict(model, x) != y
        keep = ~skipped
        view = (-1, *([1] * (x.dim() - 1)))
        best_x = x.clone()
        ctx = self.prepare_call(model, surrogate, x, y, streams)
        clean_c = self.criterion(model, x, y, ctx).detach()
        contract.check_finite(clean_c, "attack criterion at the clean input", hint="(non-finite attribution?)")
        best_c = clean_c.clone()
        for _ in range(self.restarts):
            ctx.update(self.prepare_restart(model, surrogate, x, y, streams, ctx))
            x_adv = self._random_start(x, streams) if self.random_start else x.clone()
            for _ in range(self.steps):
                grad = self.direction(surrogate, x_adv, y, ctx, streams)
                x_adv = project(x_adv.detach() + self.step_size * self._step(grad), x, self.eps, self.norm)
                ok = (self._predict(model, x_adv) == y) & keep
                c = self.criterion(model, x_adv, y, ctx).detach()
                improve = ok & self._better(c, best_c)
                best_c = torch.where(improve, c, best_c)
                best_x = torch.where(improve.view(view), x_adv, best_x)
        success = self._better(best_c, clean_c) & keep
        return AttackResult(best_x.detach(), success, skipped, best_c)
