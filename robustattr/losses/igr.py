"""IGR and TRADES+IGR (Wang & Kong 2022): keep natural and perturbed IG attributions aligned."""

from __future__ import annotations

import torch
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
from robustattr.losses.base import LossOutput, checked_loss, probe_logits
from robustattr.losses.common import TradesInner, cosine_gap, label_ig
from robustattr.losses.trades import trades_terms
from robustattr.models.activation import softplus_surrogate
from robustattr.registry import register
from robustattr.utils.modes import eval_mode

_BASES = ("ce", "trades")
_INNERS = ("kl", "attribution")


@register("loss", "igr")
class IGRLoss:
    """IGR: ``L = L_base + λ · mean_i (1 − cos(IG(x_i), IG(x'_i)))`` (Wang & Kong, NeurIPS 2022, arXiv:2205.07279; robustattr's formulation).

    ``IG`` is Integrated Gradients of the label logit, zero baseline, ``ig_steps`` right-Riemann
    points, differentiable (double backward). ``L_base`` is ``CE(f(x), y)`` (``base="ce"``) or the
    TRADES loss ``CE + β·KL(p(x) ‖ p(x'))`` (``base="trades"``: TRADES+IGR). ``x'`` is

    - ``inner="kl"``: the TRADES adversarial point (KL ascent from ``x + 0.001·N(0,I)``; one
      inner maximisation serves both terms; default when ``base="trades"``), or
    - ``inner="attribution"``: the maximiser of ``1 − cos(IG(x), IG(x'))`` in ``B_p(x, ε) ∩ [0,1]``
      from a uniform random start, with ``inner_ig_steps`` IG points on the softplus surrogate
      (second order through ReLU); default when ``base="ce"``.

    Inner maximisations run in eval mode (mode restored) and return detached points.
    Terms: ``ce``, ``kl`` (TRADES base only), ``cos_gap``.

    Cost: inner ``steps`` passes (kl) or ``steps × 2·inner_ig_steps`` (attribution); outer
    ``2·ig_steps`` double-backward passes on ``2B`` rows plus the base loss.

    Args:
        lam: λ ≥ 0 (1.0). base: ``"ce"`` | ``"trades"``. inner: ``"kl"`` | ``"attribution"`` | ``None`` (default by base).
        beta: TRADES β ≥ 0 (1.0; used with ``base="trades"``).
        eps, step_size, steps, norm: the inner budget (MNIST 0.3, 0.01, 40, ``"linf"``).
        ig_steps: IG points in the outer loss (10). inner_ig_steps: IG points in the inner loop (5).
        softplus_beta: surrogate β for ``inner="attribution"`` (10).
        start_sigma: σ of the TRADES Gaussian start (0.001).
        noise_seed: ``None`` or a seed for batch-independent per-sample random starts.
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.

    ``eps`` and ``step_size`` are settable after construction (one value, stored on the KL
    inner maximisation and read by both inner modes), e.g. by
    :class:`robustattr.lightning.BudgetWarmup`.
    """

    eps = PositiveParameter(forward_to="kl_inner")
    step_size = PositiveParameter(forward_to="kl_inner")

    def __init__(
        self,
        lam: float = 1.0,
        base: str = "ce",
        inner: str | None = None,
        beta: float = 1.0,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        norm: str = "linf",
        ig_steps: int = 10,
        inner_ig_steps: int = 5,
        softplus_beta: float = 10.0,
        start_sigma: float = 0.001,
        noise_seed: int | None = None,
    ) -> None:
        if base not in _BASES:
            raise ValueError(f"base must be one of {_BASES}, got {base!r}")
        inner = inner if inner is not None else ("kl" if base == "trades" else "attribution")
        if inner not in _INNERS:
            raise ValueError(f"inner must be one of {_INNERS} or None, got {inner!r}")
        check_nonnegative("lam", lam)
        check_nonnegative("beta", beta)
        check_count("steps", steps)
        check_norm(norm)
        check_count("ig_steps", ig_steps)
        check_count("inner_ig_steps", inner_ig_steps)
        check_positive("softplus_beta", softplus_beta)
        self.lam, self.base, self.inner, self.beta = lam, base, inner, beta
        self.kl_inner = TradesInner(eps, step_size, steps, norm, start_sigma, noise_seed)
        self.steps, self.norm = steps, norm
        self.ig_steps, self.inner_ig_steps, self.softplus_beta, self.noise_seed = ig_steps, inner_ig_steps, softplus_beta, noise_seed

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, clean: Tensor | None = None) -> Tensor:
        """The perturbed point ``x'`` (detached ``[B, C, H, W]``) for the configured ``inner``.

        ``clean``: eval-mode logits ``f(x)`` ``[B, K]`` already computed (used by ``inner="kl"``).
        """
        if self.inner == "kl":
            return self.kl_inner(model, x, clean)
        sur = softplus_surrogate(model, self.softplus_beta)
        with eval_mode(model, sur):
            ig_x = label_ig(sur, x.detach(), y, self.inner_ig_steps, create_graph=False).detach()
            start = x.detach() + draw_noise(x, self.norm, self.eps, self.noise_seed)
            return projected_ascent(
                lambda z: cosine_gap(ig_x, label_ig(sur, z, y, self.inner_ig_steps, create_graph=True)),
                x, start, self.eps, self.step_size, self.steps, self.norm,
            )

    @checked_loss(probe=False)
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        B = x.shape[0]
        # The contract probe; its eval-mode logits are also p(x) of the KL ascent (inner="kl").
        clean = probe_logits(model, x, y)
        x_adv = self.attack(model, x, y, clean)
        terms: dict[str, Tensor] = {}
        if self.base == "trades":
            logits, ce, kl = trades_terms(model, x, x_adv, y)
            loss = ce + self.beta * kl
            terms["kl"] = kl.detach()
        else:
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            loss = ce
        terms["ce"] = ce.detach()
        # Both IGs in one folded call on [x; x'] (2B rows × ig_steps points).
        ig = label_ig(model, torch.cat([x.detach(), x_adv], dim=0), y.repeat(2), self.ig_steps, create_graph=True)
        gap = cosine_gap(ig[:B], ig[B:]).mean()
        terms["cos_gap"] = gap.detach()
        return LossOutput(loss + self.lam * gap, terms, logits.detach())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lam={self.lam}, base={self.base!r}, inner={self.inner!r}, beta={self.beta}, eps={self.eps}, "
            f"step_size={self.step_size}, steps={self.steps}, norm={self.norm!r}, ig_steps={self.ig_steps}, "
            f"inner_ig_steps={self.inner_ig_steps})"
        )


@register("loss", "trades_igr")
class TRADESIGRLoss(IGRLoss):
    """TRADES+IGR (Wang & Kong, NeurIPS 2022, arXiv:2205.07279): the TRADES loss plus the IG cosine gap.

    ``L = CE(f(x), y) + β·mean KL(p(x) ‖ p(x')) + λ · mean_i (1 − cos(IG(x_i), IG(x'_i)))`` with
    ``x'`` the TRADES adversarial point (``inner="kl"``, one inner maximisation) by default;
    :class:`IGRLoss` with ``base="trades"`` (same arguments, without ``base``).
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.
    """

    def __init__(
        self,
        lam: float = 1.0,
        inner: str | None = None,
        beta: float = 1.0,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        norm: str = "linf",
        ig_steps: int = 10,
        inner_ig_steps: int = 5,
        softplus_beta: float = 10.0,
        start_sigma: float = 0.001,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(
            lam=lam, base="trades", inner=inner, beta=beta, eps=eps, step_size=step_size, steps=steps, norm=norm,
            ig_steps=ig_steps, inner_ig_steps=inner_ig_steps, softplus_beta=softplus_beta,
            start_sigma=start_sigma, noise_seed=noise_seed,
        )
