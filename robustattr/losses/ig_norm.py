"""IG-NORM and IG-SUM-NORM (Chen et al. 2019, "Robust attribution regularization")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.pgd import (
    PositiveParameter,
    check_count,
    check_nonnegative,
    check_norm,
    check_positive,
    draw_noise,
    projected_ascent,
)
from robustattr.losses.base import LossOutput, checked_loss
from robustattr.losses.common import ig_nodes, l1_per_sample, loss_ig
from robustattr.models.activation import softplus_surrogate
from robustattr.registry import register
from robustattr.utils.modes import eval_mode


@register("loss", "ig_norm")
class IGNormLoss:
    """IG-NORM: ``L = CE(f(x), y) + λ · mean_i ‖IGᴸ(x_i, x*_i)‖₁``;
    IG-SUM-NORM (``sum_norm=True``): ``L = CE(f(x*), y) + β · mean_i ‖IGᴸ(x_i, x*_i)‖₁``.

    ``IGᴸ(x, x') = (x'−x) ⊙ (1/m) Σ_{k=1..m} ∇_z CE(f(z_k), y)``, ``z_k = x + (k/m)(x'−x)``
    (:func:`robustattr.losses.common.loss_ig`). ``x*`` maximises ``‖IGᴸ_approx(x, x')‖₁``
    (IG-NORM) or ``CE(f(x'), y) + β‖IGᴸ_approx(x, x')‖₁`` (IG-SUM-NORM) over
    ``B_p(x, ε) ∩ [0,1]`` by PGD from a uniform random start, where ``IGᴸ_approx`` keeps every
    ``approx``-th path point. The inner gradient differentiates IG w.r.t. ``x'`` (second
    order), so it runs on the softplus surrogate (β = ``softplus_beta``) in eval mode; the
    outer loss uses the original network. Terms: ``ce``, ``ig_norm``.

    Cost: inner ``steps × (m/approx)`` double-backward passes; outer ``m`` double-backward
    passes + one CE pass.

    Args:
        lam: λ ≥ 0 (IG-NORM weight; Chen et al., NeurIPS 2019, arXiv:1905.09957; MNIST default 1).
        beta: β ≥ 0 (IG-SUM-NORM weight, default 0.1).
        sum_norm: IG-SUM-NORM instead of IG-NORM.
        eps, step_size, steps: PGD budget (MNIST 0.3, 0.01, 40).
        ig_steps: m (50). approx: keep every approx-th point in the inner loop (5); must divide m.
        norm: ``"linf"`` (paper) or ``"l2"``.
        softplus_beta: β of the softplus surrogate used by the inner maximisation (10).
        noise_seed: ``None`` or a seed for batch-independent per-sample random starts.
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.

    ``eps`` and ``step_size`` stay settable after construction (validated ``> 0``), e.g. by
    :class:`robustattr.lightning.BudgetWarmup`.
    """

    eps = PositiveParameter()
    step_size = PositiveParameter()

    def __init__(
        self,
        lam: float = 1.0,
        beta: float = 0.1,
        sum_norm: bool = False,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        ig_steps: int = 50,
        approx: int = 5,
        norm: str = "linf",
        softplus_beta: float = 10.0,
        noise_seed: int | None = None,
    ) -> None:
        check_nonnegative("lam", lam)
        check_nonnegative("beta", beta)
        check_count("steps", steps)
        check_norm(norm)
        check_positive("softplus_beta", softplus_beta)
        ig_nodes(ig_steps, approx)  # validates ig_steps and approx
        self.lam, self.beta, self.sum_norm = lam, beta, sum_norm
        self.eps, self.step_size, self.steps, self.norm = eps, step_size, steps, norm
        self.ig_steps, self.approx, self.softplus_beta, self.noise_seed = ig_steps, approx, softplus_beta, noise_seed

    def inner_objective(self, model: nn.Module, x: Tensor, x_prime: Tensor, y: Tensor) -> Tensor:
        """Per-sample inner objective ``[B]``: ``‖IGᴸ_approx‖₁`` (+ ``CE(f(x'))`` scaled as in IG-SUM-NORM)."""
        ig = l1_per_sample(loss_ig(model, x, x_prime, y, self.ig_steps, self.approx, create_graph=True))
        if not self.sum_norm:
            return ig
        return F.cross_entropy(model(x_prime), y, reduction="none") + self.beta * ig

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """``x*``: PGD on :meth:`inner_objective` with the softplus surrogate, eval mode; detached ``[B, C, H, W]``."""
        sur = softplus_surrogate(model, self.softplus_beta)
        with eval_mode(model, sur):
            start = x.detach() + draw_noise(x, self.norm, self.eps, self.noise_seed)
            return projected_ascent(
                lambda z: self.inner_objective(sur, x, z, y), x, start, self.eps, self.step_size, self.steps, self.norm
            )

    @checked_loss()
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        x_star = self.attack(model, x, y)
        ig = l1_per_sample(loss_ig(model, x, x_star, y, self.ig_steps, 1, create_graph=True)).mean()
        if self.sum_norm:
            ce = F.cross_entropy(model(x_star), y)
            return LossOutput(ce + self.beta * ig, {"ce": ce.detach(), "ig_norm": ig.detach()})
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        return LossOutput(ce + self.lam * ig, {"ce": ce.detach(), "ig_norm": ig.detach()}, logits.detach())

    def __repr__(self) -> str:
        w = f"beta={self.beta}" if self.sum_norm else f"lam={self.lam}"
        return (
            f"{type(self).__name__}({w}, sum_norm={self.sum_norm}, eps={self.eps}, step_size={self.step_size}, "
            f"steps={self.steps}, ig_steps={self.ig_steps}, approx={self.approx}, norm={self.norm!r})"
        )


@register("loss", "ig_sum_norm")
class IGSumNormLoss(IGNormLoss):
    """IG-SUM-NORM (Chen et al., NeurIPS 2019, arXiv:1905.09957): ``L = CE(f(x*), y) + β · mean_i ‖IGᴸ(x_i, x*_i)‖₁``.

    ``x*`` maximises ``CE(f(x'), y) + β‖IGᴸ_approx(x, x')‖₁`` over ``B_p(x, ε) ∩ [0,1]``;
    :class:`IGNormLoss` with ``sum_norm=True`` (same arguments, without ``lam``/``sum_norm``).
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.
    """

    def __init__(
        self,
        beta: float = 0.1,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        ig_steps: int = 50,
        approx: int = 5,
        norm: str = "linf",
        softplus_beta: float = 10.0,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(
            beta=beta, sum_norm=True, eps=eps, step_size=step_size, steps=steps, ig_steps=ig_steps,
            approx=approx, norm=norm, softplus_beta=softplus_beta, noise_seed=noise_seed,
        )
