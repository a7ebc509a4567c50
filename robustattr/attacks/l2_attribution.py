"""ℓ2 attribution attack: push the attribution away from ``g(x)`` inside an ℓ2 ball.

Used to validate worst-case deviation bounds (Wang & Kong, CVPR 2023, arXiv:2303.00340: ℓ2 PGD-20, euclidean objective) and
to try to beat smoothing certificates (Wang & Kong, arXiv:2405.06361: smoothed attribution, cosine objective).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.core import (
    ProjectedAscentAttack,
    RandomStreams,
    attribution_noise,
    attribution_with_noise,
)
from robustattr.attributions.base import Attribution
from robustattr.registry import register

__all__ = ["L2AttributionAttack"]


def _cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 − cos(a, b)`` per sample over flattened ``[B, ...]``; a zero vector has cosine 0 with anything."""
    return 1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)


@register("attack", "l2_attribution")
class L2AttributionAttack(ProjectedAscentAttack):
    """Maximise ``1 − cos(g(x+δ), g(x))`` or ``‖g(x+δ) − g(x)‖₂`` over ``‖δ‖₂ ≤ ε, x+δ ∈ [0,1]``.

    Normalised-gradient ascent ``δ ← Π(δ + α ∇J/‖∇J‖₂)`` on the softplus surrogate (β =
    ``surrogate_beta``; ``None`` uses the model as is, for models that are already smooth),
    projection onto the ℓ2 ball ∩ [0, 1], label checked on the original network after every
    step, best label-preserving iterate kept per sample. The criterion that selects and is
    reported is the objective evaluated with the ORIGINAL network's attribution:
    ``c(x̃) = 1 − cos(g(x̃), g(x))`` (cosine) or ``‖g(x̃) − g(x)‖₂`` (euclidean).

    Smoothed attributions (anything with ``sample_noise``/``attribute_with_noise``, e.g.
    :class:`~robustattr.attributions.UniformSmoothed`) are attacked with common random numbers:
    one noise draw ``[n, B, C, H, W]`` is used for ``g(x)`` and every ``g(x̃)`` of a restart
    (restart 0 uses the same draw as the criterion; later restarts draw fresh noise for the
    ascent, while the criterion keeps its draw so that restarts are compared fairly). With
    ``sample_seeds`` the draws are per sample (independent of batching).

    The ascent maximises ``‖g(x̃) − g(x)‖²`` for the euclidean objective: same normalised
    direction, and defined at ``δ = 0``. At ``δ = 0`` both objectives are stationary, hence
    ``random_start=True`` by default.

    Args:
        attribution: any :class:`~robustattr.attributions.Attribution` ``g``.
        eps: ε, ℓ2 radius in pixel units.
        steps: ascent steps per restart (default 20).
        step_size: α (default ``2.5·ε/steps``).
        objective: ``"cosine"`` or ``"euclidean"``.
        restarts: independent restarts (best kept).
        surrogate_beta: softplus β of the ascent surrogate (default 10), or None.
        random_start: start uniformly in the ε-ball (exact sampler).
        seed: seed of the random start/noise when no per-sample seeds are passed.
        smooth_pool: the surrogate also smooths max-pooling (log-mean-exp, same β; default True).

    Call: ``attack(model, x, y, sample_seeds=None) -> AttackResult`` with ``x: [B, C, H, W]``; runs
    the model in eval mode (every submodule's mode restored) and checks the input contract once
    (``ValueError`` naming the samples).
    Cost per step: one attribution with ``create_graph=True`` and its backward on the
    surrogate, one attribution and one forward on the original network (×n for smoothed ones).
    """

    criterion_sense = "max"

    def __init__(
        self,
        attribution: Attribution,
        eps: float,
        steps: int = 20,
        step_size: float | None = None,
        objective: str = "cosine",
        restarts: int = 1,
        surrogate_beta: float | None = 10.0,
        random_start: bool = True,
        seed: int | None = None,
        smooth_pool: bool = True,
    ) -> None:
        if objective not in ("cosine", "euclidean"):
            raise ValueError(f"objective must be 'cosine' or 'euclidean', got {objective!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        alpha = 2.5 * eps / steps if step_size is None else step_size
        super().__init__(eps, steps, alpha, "l2", restarts, random_start, surrogate_beta, seed, smooth_pool)
        self.attribution = attribution
        self.objective_name = objective

    def _distance(self, g: Tensor, ref: Tensor, squared: bool) -> Tensor:
        if self.objective_name == "cosine":
            return _cosine_distance(g, ref)
        d2 = (g - ref).flatten(1).pow(2).sum(dim=1)
        return d2 if squared else d2.sqrt()

    def prepare_call(self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams) -> dict[str, Any]:
        noise = attribution_noise(self.attribution, x, streams)
        ref = attribution_with_noise(self.attribution, model, x, y, noise).detach()
        return {"eval_noise": noise, "ref": ref, "restart": 0}

    def prepare_restart(
        self, model: nn.Module, surrogate: nn.Module, x: Tensor, y: Tensor, streams: RandomStreams, ctx: dict[str, Any]
    ) -> dict[str, Any]:
        r = ctx["restart"]
        noise = ctx["eval_noise"] if r == 0 else attribution_noise(self.attribution, x, streams)
        sur_ref = attribution_with_noise(self.attribution, surrogate, x, y, noise).detach()
        return {"noise": noise, "sur_ref": sur_ref, "restart": r + 1}

    def objective(self, surrogate: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        g = attribution_with_noise(self.attribution, surrogate, x_adv, y, ctx["noise"], create_graph=True)
        return self._distance(g, ctx["sur_ref"], squared=True)

    def criterion(self, model: nn.Module, x_adv: Tensor, y: Tensor, ctx: dict[str, Any]) -> Tensor:
        g = attribution_with_noise(self.attribution, model, x_adv, y, ctx["eval_noise"]).detach()
        return self._distance(g, ctx["ref"], squared=False)

    def __repr__(self) -> str:
        return (
            f"L2AttributionAttack(attribution={self.attribution!r}, eps={self.eps}, steps={self.steps}, "
            f"step_size={self.step_size}, objective={self.objective_name!r}, restarts={self.restarts})"
        )
