"""IFIA attribution attacks (Ghorbani, Abid & Zou, "Interpretation of Neural Networks is Fragile", AAAI 2019, arXiv:1710.10547) on the projected-ascent core.

All attack the map ``a(x) = Σ_c |g_c(x)|`` of any attribution ``g`` with ℓ∞ sign steps (ℓ2
normalised steps with ``norm="l2"``) on the softplus surrogate. The ascent uses the
sum-normalised surrogate map ``ā = a / Σ a`` (the attack cannot "win" by merely scaling the
gradient down); the criterion that selects the best label-preserving iterate and is
reported is computed from the ORIGINAL network's attribution.

=================  ===================================================  ======================  =========
attack             ascent objective (maximised, surrogate)              criterion (original)    better
=================  ===================================================  ======================  =========
TopKAttack         ``−Σ_{i∈T_k(a(x))} ā_i(x̃)``                          top-k intersection      lower
LENSTopKAttack     ``−Σ_{i∈N_w(T_k(a(x)))} ā_i(x̃)``                     LENS top-k (mean)       lower
MassCenterAttack   ``‖C(ā(x̃)) − C(a(x))‖²``                             ``‖C(a(x̃)) − C(a(x))‖`` higher
TargetedAttack     ``Σ_{i∈target} ā_i(x̃)``                              mass fraction in target higher
RandomSignAttack   none: each step tries ``x + ε·s``, ``s`` random ±1   top-k intersection      lower
=================  ===================================================  ======================  =========

Defaults (MNIST scale): ε=0.3, α=0.01, 100 steps, k=100; CIFAR: ε=8/255, α=1/255, k=1000.
Cost per step: one attribution with ``create_graph=True`` + backward on the surrogate, one
forward and one attribution on the original network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attacks.core import (
    ProjectedAscentAttack,
    RandomStreams,
    attribution_noise,
    attribution_with_noise,
)
from robustattr.attributions.base import Attribution
from robustattr.metrics import functional as RF
from robustattr.registry import register

__all__ = ["IFIAAttack", "LENSTopKAttack", "MassCenterAttack", "RandomSignAttack", "TargetedAttack", "TopKAttack"]


def _normalised_map(g: Tensor) -> Tensor:
    """``ā = a / Σ a`` with ``a = Σ_c |g_c|``; ``[B, C, H, W] → [B, H, W]`` (zero maps stay zero)."""
    a = g.abs().sum(dim=1)
    return a / a.flatten(1).sum(1).clamp_min(1e-30).view(-1, 1, 1)


def _soft_center(a: Tensor) -> Tensor:
    """Differentiable mass centre ``[B, H, W] → [B, 2]`` (row, col) of a non-negative map."""
    B, H, W = a.shape
    rows = torch.arange(H, dtype=a.dtype, device=a.device)
    cols = torch.arange(W, dtype=a.dtype, device=a.device)
    m = a.flatten(1).sum(1).clamp_min(1e-30)
    return torch.stack([(a.sum(2) * rows).sum(1) / m, (a.sum(1) * cols).sum(1) / m], dim=1)


class IFIAAttack(ProjectedAscentAttack):
    """Shared machinery of the IFIA attacks (see the module table).

    Args:
        attribution: the attribution ``g`` attacked (any :class:`Attribution`; smoothed ones
            use a fixed noise draw per restart, as in :class:`L2AttributionAttack`).
        eps: ε (default 0.3). steps: default 100. step_size: α (default 0.01).
        k: size of the top-k set (default 100).
        norm: ``"linf"`` (default) or ``"l2"``.
        restarts, random_start, surrogate_beta, seed, smooth_pool: as in :class:`ProjectedAscentAttack`.

    Call: ``attack(model, x, y, sample_seeds=None) -> AttackResult``; runs the model in eval mode
    (modes restored) and checks the input contract once (``ValueError`` naming the samples).
    """

    def __init__(
        self,
        attribution: Attribution,
        eps: float = 0.3,
        steps: int = 100,
        step_size: float = 0.01,
        k: int = 100,
        norm: str = "linf",
        restarts: int = 1,
        random_start: bool = False,
        surrogate_beta: float | None = 10.0,
        seed: int | None = None,
        smooth_pool: bool = True,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(eps, steps, step_size, norm, restarts, random_start, surrogate_beta, seed, smooth_pool)
        self.attribution, self.k = attribution, int(k)

    def prepare_call(self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams) -> dict[str, Any]:
        _, _, H, W = x.shape
        if self.k > H * W:
            raise ValueError(f"k must be <= number of pixels {H * W}, got {self.k}")
        noise = attribution_noise(self.attribution, x, streams)
        a_ref = attribution_with_noise(self.attribution, model, x, y, noise).detach().abs().sum(1)
        return {"eval_noise": noise, "a_ref": a_ref, "topk": RF.topk_mask(a_ref, self.k), "x": x, "restart": 0}

    def prepare_restart(
        self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams, ctx: dict[str, Any]
    ) -> dict[str, Any]:
        r = ctx["restart"]
        noise = ctx["eval_noise"] if r == 0 else attribution_noise(self.attribution, x, streams)
        return {"noise": noise, "restart": r + 1}

    def _sur_map(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return _normalised_map(attribution_with_noise(self.attribution, surrogate, x_adv, y, ctx["noise"], create_graph=True))

    def _orig_map(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return attribution_with_noise(self.attribution, model, x_adv, y, ctx["eval_noise"]).detach().abs().sum(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps}, steps={self.steps}, step_size={self.step_size}, k={self.k}, norm={self.norm!r})"


@register("attack", "topk")
class TopKAttack(IFIAAttack):
    """Decrease the attribution mass on the clean top-k pixels; criterion: top-k intersection (lower is better)."""

    criterion_sense = "min"

    def objective(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return -(self._sur_map(surrogate, x_adv, y, ctx) * ctx["topk"]).flatten(1).sum(1)

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return RF.topk_intersection(ctx["a_ref"], self._orig_map(model, x_adv, y, ctx), self.k)


@register("attack", "lens_topk")
class LENSTopKAttack(IFIAAttack):
    """Decrease the mass on the w-dilated clean top-k set; criterion: LENS top-k mean (lower is better).

    Extra arg: ``w`` (odd window, default 3).
    """

    criterion_sense = "min"

    def __init__(self, attribution: Attribution, eps: float = 0.3, steps: int = 100, step_size: float = 0.01, k: int = 100, w: int = 3, **kwargs: Any) -> None:
        if w < 1 or w % 2 == 0:
            raise ValueError(f"w must be a positive odd integer, got {w}")
        super().__init__(attribution, eps, steps, step_size, k, **kwargs)
        self.w = w

    def prepare_call(self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams) -> dict[str, Any]:
        ctx = super().prepare_call(model, surrogate, x, y, streams)
        ctx["mask"] = RF.dilate(ctx["topk"], self.w)
        return ctx

    def objective(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return -(self._sur_map(surrogate, x_adv, y, ctx) * ctx["mask"]).flatten(1).sum(1)

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        fwd, bwd = RF.lens_topk(ctx["a_ref"], self._orig_map(model, x_adv, y, ctx), self.k, self.w)
        return (fwd + bwd) / 2


@register("attack", "mass_center")
class MassCenterAttack(IFIAAttack):
    """Move the attribution's mass centre; criterion ``‖C(a(x̃)) − C(a(x))‖₂`` in pixels (higher is better)."""

    criterion_sense = "max"

    def prepare_call(self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams) -> dict[str, Any]:
        ctx = super().prepare_call(model, surrogate, x, y, streams)
        ctx["center"] = RF.mass_center(ctx["a_ref"])
        return ctx

    def objective(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        c = _soft_center(self._sur_map(surrogate, x_adv, y, ctx))
        return (c - ctx["center"]).pow(2).sum(1)

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return (RF.mass_center(self._orig_map(model, x_adv, y, ctx)) - ctx["center"]).norm(dim=1)


@register("attack", "targeted")
class TargetedAttack(IFIAAttack):
    """Increase the attribution mass inside a target region; criterion: mass fraction in it (higher is better).

    Extra arg: ``target_mask`` — bool ``[H, W]`` (same region for every sample), ``[B, H, W]``
    per call (``attack(model, x, y, target_mask=...)``), or None: the top-left ``H/4 × W/4`` box.
    """

    criterion_sense = "max"

    def __init__(self, attribution: Attribution, eps: float = 0.3, steps: int = 100, step_size: float = 0.01, k: int = 100, target_mask: Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(attribution, eps, steps, step_size, k, **kwargs)
        self.target_mask = target_mask
        self._call_mask: Tensor | None = None

    def __call__(  # type: ignore[override]
        self, model: nn.Module, x: Tensor, y: Tensor, sample_seeds: Any = None, target_mask: Tensor | None = None,
        *, check_range: bool = True,
    ) -> Any:
        """Attack as :meth:`ProjectedAscentAttack.__call__`, with an optional per-call ``target_mask [B, H, W]``."""
        self._call_mask = target_mask
        try:
            return super().__call__(model, x, y, sample_seeds, check_range=check_range)
        finally:
            self._call_mask = None

    def _mask(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        m = self._call_mask if self._call_mask is not None else self.target_mask
        if m is None:
            m = torch.zeros(H, W, dtype=torch.bool, device=x.device)
            m[: max(1, H // 4), : max(1, W // 4)] = True
        m = m.to(device=x.device, dtype=torch.bool)
        if m.shape[-2:] != (H, W):
            raise ValueError(f"target_mask must be [H, W]=({H}, {W}) or [B, H, W], got {tuple(m.shape)}")
        return m.expand(B, H, W)

    def prepare_call(self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams) -> dict[str, Any]:
        ctx = super().prepare_call(model, surrogate, x, y, streams)
        ctx["target"] = self._mask(x)
        return ctx

    def objective(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return (self._sur_map(surrogate, x_adv, y, ctx) * ctx["target"]).flatten(1).sum(1)

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        a = self._orig_map(model, x_adv, y, ctx)
        return (a * ctx["target"]).flatten(1).sum(1) / a.flatten(1).sum(1).clamp_min(1e-30)


@register("attack", "random_sign")
class RandomSignAttack(IFIAAttack):
    """Baseline: every step tries a fresh ``x + ε·s`` (``s`` uniform ±1 per pixel) and keeps the best.

    No gradient is used; ``step_size`` is ignored. Criterion: top-k intersection (lower is better).
    """

    criterion_sense = "min"

    def direction(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any], streams: RandomStreams) -> Tensor:
        s = torch.where(streams.uniform(tuple(x_adv.shape[1:])) < 0.5, -1.0, 1.0).to(x_adv.dtype)
        return ctx["x"] + self.eps * s - x_adv  # the core adds step_size·_step(direction) = this

    def _step(self, grad: Tensor) -> Tensor:
        return grad / self.step_size

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        return RF.topk_intersection(ctx["a_ref"], self._orig_map(model, x_adv, y, ctx), self.k)
