"""Each robust training objective's own target, measured per sample with one setting for every model.

A training objective optimises a specific quantity; before asking whether it makes attributions
more robust, a comparison should check that it does what it optimises. This evaluator measures,
for any classifier and with identical settings whatever objective trained it:

============== ===================================================================== ==============================
column          value per sample (``x'`` found by the objective's own inner ascent)    objective (paper)
============== ===================================================================== ==============================
pgd_robust      ``argmax f(x') = y`` with ``x'`` = PGD on the CE in the ε-ball          PGD-AT (Madry et al., ICLR 2018, arXiv:1706.06083)
trades_kl       ``KL(p(x) ‖ p(x'))``, ``x'`` = TRADES' KL ascent                        TRADES (Zhang et al., ICML 2019, arXiv:1901.08573)
ig_norm         ``‖IGᴸ(x, x*)‖₁`` (m path points), ``x*`` = IG-NORM's ascent             IG-NORM / IG-SUM-NORM (Chen et al., NeurIPS 2019, arXiv:1905.09957)
art_triplet     ART's hard-mined triplet loss on ``{x, x_adv}``, ``x_adv`` = ART's ascent ART (Singh et al., ECCV 2020, arXiv:1911.13073)
igr_ig_cos      ``cos(IG(x), IG(x'))``, ``x'`` = IGR's attribution ascent               IGR, TRADES+IGR (Wang & Kong, NeurIPS 2022, arXiv:2205.07279)
ssr_lambda_max  ``λ_max(H̃(x))``, ``H̃ = W (diag(p) − ppᵀ) Wᵀ`` at the clean input        SSR (Wang et al., NeurIPS 2020, arXiv:2006.07828)
============== ===================================================================== ==============================

The inner maximisations and the quantities are the objectives' own code
(:class:`~robustattr.losses.common.TradesInner`, :meth:`IGNormLoss.attack
<robustattr.losses.IGNormLoss.attack>`, :meth:`ARTLoss.attack <robustattr.losses.ARTLoss.attack>`,
:meth:`IGRLoss.attack <robustattr.losses.IGRLoss.attack>`, :func:`~robustattr.losses.common.loss_ig`,
:func:`~robustattr.losses.art.triplet_per_sample`, :func:`~robustattr.losses.ssr.logit_jacobian`,
:func:`~robustattr.losses.ssr.ce_hessian_lambda_max`), built with this evaluator's budget instead
of each model's training budget, so every model is measured the same way. The explained class is
the dataset label (as in training).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attacks.pgd import PGD, check_count, check_norm, check_positive
from robustattr.evaluation._common import check_batch, lower_median, masked_mean
from robustattr.evaluation.base import Evaluator
from robustattr.losses import ARTLoss, IGNormLoss, IGRLoss
from robustattr.losses.art import pos_neg_gradients, triplet_per_sample
from robustattr.losses.common import (
    TradesInner,
    cosine_gap,
    ig_nodes,
    kl_per_sample,
    l1_per_sample,
    label_ig,
    loss_ig,
)
from robustattr.losses.ssr import ce_hessian_lambda_max, logit_jacobian
from robustattr.registry import register
from robustattr.utils import contract, eval_mode

__all__ = ["TARGETS", "TARGET_SENSE", "ObjectiveTargets"]

#: The measurable targets, in column order.
TARGETS: tuple[str, ...] = ("pgd_robust", "trades_kl", "ig_norm", "art_triplet", "igr_ig_cos", "ssr_lambda_max")
#: Whether a larger value is better (``"max"``) or worse (``"min"``) for the model.
TARGET_SENSE: dict[str, str] = {
    "pgd_robust": "max", "trades_kl": "min", "ig_norm": "min", "art_triplet": "min", "igr_ig_cos": "max",
    "ssr_lambda_max": "min",
}


@register("evaluator", "targets")
class ObjectiveTargets(Evaluator):
    """Per-sample values of the training objectives' own targets (see the module table).

    Every target with an inner maximisation uses the same budget: ℓ_p ball of radius ``eps``,
    ``steps`` steps of ``step_size`` (default ``2.5·eps/steps``), IG with ``ig_steps`` points
    (``inner_ig_steps`` inside IGR's ascent, every ``approx``-th point inside IG-NORM's). Random
    starts: PGD starts sample i from ``Generator(seed + index_i)``; TRADES', IG-NORM's and IGR's
    starts use the objectives' ``noise_seed = seed`` (a generator per sample keyed by its pixels,
    :func:`robustattr.attacks.pgd.draw_noise`). Both are independent of batching and sharding.

    Args:
        targets: which columns to compute (a subset of :data:`TARGETS`, in any order).
        eps: radius ε > 0 of every inner maximisation (pixel units).
        steps: inner steps (≥ 1).
        step_size: inner step α > 0; ``None``: ``2.5·eps/steps``.
        norm: ``"linf"`` or ``"l2"`` (ART's ascent is ℓ∞ only: ``art_triplet`` needs ``"linf"``).
        ig_steps: m, IG points of the measured ``‖IGᴸ‖₁`` and ``cos(IG(x), IG(x'))`` (right Riemann).
        approx: IG-NORM's ascent keeps every ``approx``-th path point (must divide ``ig_steps``).
        inner_ig_steps: IG points inside IGR's attribution ascent.
        art_top_k: pixels of the clean saliency ART's ascent attacks.
        softplus_beta: surrogate β of IG-NORM's and IGR's second-order ascents.
        art_softplus_beta: surrogate β of ART's ascent.
        seed: base of the per-sample seeds.

    Columns (each ``[b]``): the chosen targets (``pgd_robust`` bool, the others float64).
    Summary: per target its mean over all samples (for ``pgd_robust`` the robust accuracy) and,
    for the continuous targets, ``<target>_median`` (lower median).

    Cost per sample (passes of the network): pgd ``steps``; trades ``steps``; ig_norm
    ``steps·m/approx + m`` double backwards; art ``2·steps + 2`` double backwards on 2 rows;
    igr ``steps·inner_ig_steps + 2m`` double backwards; ssr K backward passes.
    """

    name = "targets"

    def __init__(
        self,
        targets: Sequence[str] = TARGETS,
        eps: float = 0.1,
        steps: int = 10,
        step_size: float | None = None,
        norm: str = "linf",
        ig_steps: int = 10,
        approx: int = 1,
        inner_ig_steps: int = 5,
        art_top_k: int = 100,
        softplus_beta: float = 10.0,
        art_softplus_beta: float = 50.0,
        seed: int = 0,
    ) -> None:
        targets = tuple(targets)
        unknown = [t for t in targets if t not in TARGETS]
        if not targets or unknown or len(set(targets)) != len(targets):
            raise ValueError(f"targets must be distinct names from {TARGETS}, got {list(targets)}")
        check_positive("eps", eps)
        check_count("steps", steps)
        if step_size is not None:
            check_positive("step_size", step_size)
        check_norm(norm)
        if "art_triplet" in targets and norm != "linf":
            raise ValueError(f"norm must be 'linf' for art_triplet (ART's ascent is l_inf), got {norm!r}")
        ig_nodes(ig_steps, approx)  # validates ig_steps and approx
        check_count("inner_ig_steps", inner_ig_steps)
        check_count("art_top_k", art_top_k)
        check_positive("softplus_beta", softplus_beta)
        check_positive("art_softplus_beta", art_softplus_beta)
        self.targets = targets
        self.eps, self.steps, self.norm = float(eps), int(steps), norm
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.ig_steps, self.approx, self.inner_ig_steps = int(ig_steps), int(approx), int(inner_ig_steps)
        self.art_top_k, self.softplus_beta, self.art_softplus_beta = int(art_top_k), float(softplus_beta), float(art_softplus_beta)
        self.seed = int(seed)

    # ---- contract ------------------------------------------------------------------------
    def columns(self, num_classes: int | None = None) -> list[str]:
        """The chosen targets, in the order given."""
        return list(self.targets)

    def params(self) -> dict[str, Any]:
        """Every parameter that changes a value."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "targets": list(self.targets), "eps": self.eps, "steps": self.steps, "step_size": self.step_size,
            "norm": self.norm, "ig_steps": self.ig_steps, "approx": self.approx, "inner_ig_steps": self.inner_ig_steps,
            "art_top_k": self.art_top_k, "softplus_beta": self.softplus_beta, "art_softplus_beta": self.art_softplus_beta,
            "seed": self.seed, "explain": "label",
        }

    def cost(self) -> float:
        """Roughly the network passes per sample (double backwards counted as 3)."""
        m, s = self.ig_steps, self.steps
        per = {
            "pgd_robust": 2.0 * s, "trades_kl": 2.0 * s, "ig_norm": 3.0 * (s * m / self.approx + m),
            "art_triplet": 3.0 * (2 * s + 2), "igr_ig_cos": 3.0 * (s * self.inner_ig_steps + 2 * m), "ssr_lambda_max": 20.0,
        }
        return float(sum(per[t] for t in self.targets))

    # ---- the objectives' pieces with this evaluator's budget ------------------------------
    def pgd(self) -> PGD:
        """PGD on the CE (random start), the inner maximisation of PGD-AT."""
        return PGD(eps=self.eps, step_size=self.step_size, steps=self.steps, norm=self.norm, random_start=True)

    def trades_inner(self) -> TradesInner:
        """TRADES' KL ascent from ``x + 0.001·N(0, I)``."""
        return TradesInner(self.eps, self.step_size, self.steps, self.norm, noise_seed=self.seed)

    def ig_norm_loss(self) -> IGNormLoss:
        """IG-NORM with this budget (its :meth:`~robustattr.losses.IGNormLoss.attack` finds ``x*``)."""
        return IGNormLoss(
            eps=self.eps, step_size=self.step_size, steps=self.steps, ig_steps=self.ig_steps, approx=self.approx,
            norm=self.norm, softplus_beta=self.softplus_beta, noise_seed=self.seed,
        )

    def art_loss(self) -> ARTLoss:
        """ART with this budget (its :meth:`~robustattr.losses.ARTLoss.attack` finds ``x_adv``, from ``x``)."""
        return ARTLoss(
            eps=self.eps, step_size=self.step_size, steps=self.steps, top_k=self.art_top_k,
            softplus_beta=self.art_softplus_beta,
        )

    def igr_loss(self) -> IGRLoss:
        """IGR with the attribution ascent and this budget (its :meth:`~robustattr.losses.IGRLoss.attack` finds ``x'``)."""
        return IGRLoss(
            base="ce", inner="attribution", eps=self.eps, step_size=self.step_size, steps=self.steps, norm=self.norm,
            ig_steps=self.ig_steps, inner_ig_steps=self.inner_ig_steps, softplus_beta=self.softplus_beta,
            noise_seed=self.seed,
        )

    def _target(self, name: str, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        B = x.shape[0]
        if name == "pgd_robust":
            x_adv = self.pgd()(model, x, y, sample_seeds=index.to(torch.int64) + self.seed)
            with torch.no_grad():
                return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
        if name == "trades_kl":
            x_adv = self.trades_inner()(model, x)
            with torch.no_grad():
                return kl_per_sample(model(x), model(x_adv))
        if name == "ig_norm":
            x_star = self.ig_norm_loss().attack(model, x, y)
            return l1_per_sample(loss_ig(model, x, x_star, y, self.ig_steps, 1))
        if name == "art_triplet":
            x_adv = self.art_loss().attack(model, x, y)
            pos, neg, _ = pos_neg_gradients(model, torch.cat([x, x_adv]), y.repeat(2))
            return triplet_per_sample(x, x_adv, pos[:B], pos[B:], neg[:B], neg[B:])
        if name == "igr_ig_cos":
            x_adv = self.igr_loss().attack(model, x, y)
            ig = label_ig(model, torch.cat([x, x_adv]), y.repeat(2), self.ig_steps, create_graph=False)
            return 1.0 - cosine_gap(ig[:B], ig[B:])
        with torch.no_grad():  # ssr_lambda_max
            logits = model(x)
        return ce_hessian_lambda_max(logit_jacobian(model, x, logits.shape[1]), logits)

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """The chosen targets for ``x: [b, C, H, W]`` in [0, 1], labels ``y`` and dataset ``index``: ``[b]``.

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            return self._evaluate(model, x, y, index)

    def _evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        check_batch(x, y, index, model)
        x, y = x.detach(), y.to(torch.int64)
        out: dict[str, Tensor] = {}
        with eval_mode(model):
            for name in self.targets:
                v = self._target(name, model, x, y, index).detach()
                out[name] = v if v.dtype == torch.bool else v.to(torch.float64)
        return out

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """Per target the mean (``pgd_robust``: robust accuracy) and, for continuous targets, the lower median."""
        out: dict[str, float] = {}
        for name in self.targets:
            out[name] = masked_mean(results[name])
            if name != "pgd_robust":
                out[f"{name}_median"] = lower_median(results[name])
        return out
