"""PGD adversarial training (Madry et al. 2018): ``L = mean_i CE(f(x'_i), y_i)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.pgd import PGD, PositiveParameter
from robustattr.losses.base import LossOutput, checked_loss
from robustattr.registry import register


@register("loss", "pgd_at")
class PGDAdversarialLoss:
    """PGD-AT: ``L = mean_i CE(f(x'_i), y_i)``, ``x' = argmax_{‖x'−x‖_p ≤ ε, x' ∈ [0,1]} CE(f(x'), y)``.

    The inner maximisation is :class:`robustattr.attacks.PGD` (random start, eval mode,
    mode restored, detached result). Terms: ``ce`` (the adversarial CE). Cost: ``steps + 1``
    forward+backward passes (× ``restarts`` for the attack).

    Args:
        eps: ε (Madry et al., ICLR 2018, arXiv:1706.06083: MNIST 0.3, CIFAR 8/255).
        step_size: α (MNIST 0.01, CIFAR 2/255).
        steps: number of PGD steps (MNIST 40, CIFAR 10).
        norm: ``"linf"`` or ``"l2"``.
        random_start: uniform random start in the ball.
        restarts: PGD restarts (keep the per-sample worst).
        noise_seed: ``None`` (global RNG) or a seed for batch-independent per-sample random
            starts (:func:`robustattr.attacks.pgd.draw_noise`).
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.

    ``eps`` and ``step_size`` are settable after construction (they forward to the inner
    :class:`~robustattr.attacks.PGD`), e.g. by :class:`robustattr.lightning.BudgetWarmup`.
    """

    eps = PositiveParameter(forward_to="attack")
    step_size = PositiveParameter(forward_to="attack")

    def __init__(
        self,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        noise_seed: int | None = None,
    ) -> None:
        self.attack = PGD(eps, step_size, steps, norm, random_start, restarts, noise_seed)

    @checked_loss()
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        x_adv = self.attack(model, x, y)
        ce = F.cross_entropy(model(x_adv), y)
        return LossOutput(ce, {"ce": ce.detach()})

    def __repr__(self) -> str:
        return f"PGDAdversarialLoss(attack={self.attack!r})"
