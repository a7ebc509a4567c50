"""TRADES (Zhang et al. 2019): ``L = CE(f(x), y) + β · mean_i KL(p(x_i) ‖ p(x'_i))``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.pgd import PositiveParameter, check_nonnegative
from robustattr.losses.base import LossOutput, checked_loss, probe_logits
from robustattr.losses.common import TradesInner, kl_per_sample
from robustattr.registry import register


def trades_terms(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Clean logits ``[B, K]``, ``CE(f(x), y)`` and ``mean_i KL(p(x_i) ‖ p(x'_i))``.

    Two separate forwards (BatchNorm sees clean and adversarial batches separately, as in the
    reference TRADES code); both distributions carry gradients.
    """
    clean, adv = model(x), model(x_adv)
    return clean, F.cross_entropy(clean, y), kl_per_sample(clean, adv).mean()


@register("loss", "trades")
class TRADESLoss:
    """TRADES: ``L = CE(f(x), y) + β · mean_i KL(p(x_i) ‖ p(x'_i))``, ``p = softmax ∘ f``.

    ``x'`` maximises the KL in ``B_p(x, ε) ∩ [0,1]`` from ``x + 0.001·N(0, I)`` by sign (ℓ∞)
    or normalised (ℓ2) steps, model in eval mode (:class:`robustattr.losses.common.TradesInner`).
    Terms: ``ce``, ``kl``. Cost: one clean eval-mode forward (the input check and ``p(x)`` of the
    ascent), ``steps`` inner forward+backward passes, then separate forward+backward passes at
    ``x`` and ``x'``.

    Args:
        beta: β ≥ 0 (Zhang et al., ICML 2019, arXiv:1901.08573: MNIST 1, CIFAR 6).
        eps: ε (MNIST 0.3, CIFAR 0.031).
        step_size: α (MNIST 0.01, CIFAR 0.007).
        steps: inner steps (MNIST 40, CIFAR 10).
        norm: ``"linf"`` or ``"l2"``.
        start_sigma: σ of the Gaussian start (0.001).
        noise_seed: ``None`` or a seed for batch-independent per-sample starts.

    ``eps`` and ``step_size`` are settable after construction (they forward to the inner
    maximisation), e.g. by :class:`robustattr.lightning.BudgetWarmup`.
    """

    eps = PositiveParameter(forward_to="inner")
    step_size = PositiveParameter(forward_to="inner")

    def __init__(
        self,
        beta: float = 1.0,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        norm: str = "linf",
        start_sigma: float = 0.001,
        noise_seed: int | None = None,
    ) -> None:
        check_nonnegative("beta", beta)
        self.beta = beta
        self.inner = TradesInner(eps, step_size, steps, norm, start_sigma, noise_seed)

    @checked_loss(probe=False)
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        # One eval-mode forward is both the contract probe and p(x) of the inner maximisation.
        x_adv = self.inner(model, x, probe_logits(model, x, y))
        clean, ce, kl = trades_terms(model, x, x_adv, y)
        return LossOutput(ce + self.beta * kl, {"ce": ce.detach(), "kl": kl.detach()}, clean.detach())

    def __repr__(self) -> str:
        i = self.inner
        return f"TRADESLoss(beta={self.beta}, eps={i.eps}, step_size={i.step_size}, steps={i.steps}, norm={i.norm!r})"
