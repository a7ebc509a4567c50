"""Attribution attacks and robustness metrics as an evaluator.

For every attack ``A`` and sample i: the clean attribution ``g(x_i)``, the attack's ``x̃_i``
(label-preserving, in the attack's ball ∩ [0, 1]), ``g(x̃_i)`` with the same noise draw for
smoothed attributions (common random numbers), and every metric ``m(g(x_i), g(x̃_i))``.

Attacks: IFIA top-k / mass-centre / targeted (A. Ghorbani, A. Abid & J. Zou, "Interpretation
of Neural Networks is Fragile", AAAI 2019, arXiv:1710.10547), the manipulation attack
(A.-K. Dombrowski et al., "Explanations can be manipulated and geometry is to blame",
NeurIPS 2019, arXiv:1906.07983) and ℓ2 attribution attacks. Metrics: top-k intersection,
Kendall τ-b, Spearman ρ, cosine, and the locality-aware LENS variants (S. Kamath, S. Mittal,
A. Deshmukh & V. N. Balasubramanian, "Rethinking Robustness of Model Attributions", AAAI 2024,
arXiv:2312.10534).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attacks.core import (
    ProjectedAscentAttack,
    RandomStreams,
    attribution_noise,
    attribution_with_noise,
)
from robustattr.attacks.ifia import TopKAttack
from robustattr.attacks.manipulate import ManipulateAttack
from robustattr.attributions import Saliency
from robustattr.attributions.base import Attribution
from robustattr.evaluation._common import check_batch, describe_metric, masked_mean
from robustattr.evaluation.base import Evaluator, describe
from robustattr.metrics.classes import AttributionMetric, build_metric
from robustattr.registry import register
from robustattr.utils import contract, eval_mode

__all__ = ["DEFAULT_METRICS", "AttributionAttackEvaluator"]

#: Metrics computed by default between ``g(x)`` and ``g(x̃)``.
DEFAULT_METRICS: tuple[str, ...] = ("topk", "lens_topk", "spearman", "kendall", "cosine")
#: Attack j of sample i uses the per-sample seed ``(seed + index_i)·_ATTACK_STRIDE + j``.
_ATTACK_STRIDE = 1009


def _metric_column(attack: str, metric: str, key: str) -> str:
    """``A/m`` for single-valued metrics and the mean of two-direction ones, ``A/m_<key>`` otherwise."""
    return f"{attack}/{metric}" if key in ("value", "mean") else f"{attack}/{metric}_{key}"


@register("evaluator", "attribution_attack")
class AttributionAttackEvaluator(Evaluator):
    """Attack the attributions and measure how much they change.

    Per sample i and attack ``A`` (named by its key in ``attacks``): ``x̃_i = A(x_i)`` with
    per-sample seed ``(seed + index_i)·1009 + j`` (j = the attack's position), then for every
    metric ``m``: ``A/m = m(g(x_i), g(x̃_i))`` where g is ``attribution`` (the attack may
    attack a different one: that measures transfer). Maps for rank metrics are
    ``a = Σ_c |g_c|`` ``[b, H, W]``; the cosine uses the flattened attribution.

    Args:
        attribution: the attribution the metrics compare (default :class:`Saliency`).
        attacks: name → attack (a :class:`~robustattr.attacks.ProjectedAscentAttack` or
            :class:`~robustattr.attacks.ManipulateAttack`; names without ``/``). Default
            ``{"topk": TopKAttack(Saliency(), eps=0.3, steps=20, step_size=0.03, k=100)}``
            (MNIST-scale budget with 20 instead of 100 steps). Note: the manipulate attack's
            default target (the neighbouring sample of the batch) depends on the batch.
        metrics: metric names of :data:`robustattr.metrics.METRICS` (default arguments) or
            metric instances.
        explain: ``"pred"`` (default: the predicted class is explained and every sample is
            attacked; the attack must keep the prediction) or ``"label"`` (the dataset label;
            misclassified samples are skipped and excluded from the means).
        seed: base of the per-sample seeds.

    Columns per attack ``A`` (each ``[b]``): ``A/success`` (bool: a label-preserving iterate
    improved the attack's criterion), ``A/skipped`` (bool: misclassified, not attacked),
    ``A/criterion`` (the attack's criterion at ``x̃``), ``A/<metric>`` (float32; two-direction
    metrics also ``A/<metric>_fwd``, ``A/<metric>_bwd``, and ``A/<metric>`` is their mean).

    Summary per attack (means over attacked samples; NaN when none was attacked):
    ``A/attacked_frac`` (fraction attacked, over all samples), ``A/success_rate``,
    ``A/criterion``, ``A/<metric>`` (and ``_fwd``/``_bwd``).

    Cost per sample: ``Σ_A steps·restarts·(one double backward + one attribution + one
    forward)`` plus two attributions per attack for the metrics.
    """

    name = "attribution_attack"

    def __init__(
        self,
        attribution: Attribution | None = None,
        attacks: Mapping[str, ProjectedAscentAttack | ManipulateAttack] | None = None,
        metrics: Sequence[str | AttributionMetric] = DEFAULT_METRICS,
        explain: str = "pred",
        seed: int = 0,
    ) -> None:
        if explain not in ("pred", "label"):
            raise ValueError(f"explain must be 'pred' or 'label', got {explain!r}")
        if attacks is None:
            attacks = {"topk": TopKAttack(Saliency(), eps=0.3, steps=20, step_size=0.03, k=100)}
        if not attacks:
            raise ValueError("attacks must name at least one attack")
        for key, atk in attacks.items():
            if not isinstance(key, str) or not key or "/" in key or not callable(atk) or isinstance(atk, Mapping):
                raise ValueError(f"attacks[{key!r}] must be an attack instance under a non-empty name without '/', got {atk!r}")
        self.attribution = attribution if attribution is not None else Saliency()
        self.attacks: dict[str, Any] = dict(attacks)
        built: dict[str, AttributionMetric] = {}
        for spec in metrics:
            m = build_metric(spec)
            if m.name in built:
                raise ValueError(f"metrics lists {m.name!r} twice")
            built[m.name] = m
        if not built:
            raise ValueError("metrics must name at least one metric")
        self.metrics = built
        self.explain, self.seed = explain, int(seed)

    # ---- contract -----------------------------------------------------------------------
    def columns(self, num_classes: int | None = None) -> list[str]:
        """Per attack: ``A/success``, ``A/skipped``, ``A/criterion``, then each metric's columns."""
        cols: list[str] = []
        for a in self.attacks:
            cols += [f"{a}/success", f"{a}/skipped", f"{a}/criterion"]
            for mname, metric in self.metrics.items():
                cols += [_metric_column(a, mname, key) for key in metric.keys]
        return cols

    def params(self) -> dict[str, Any]:
        """Attribution, attacks (with their own parameters), metrics (with ``k``, ``w``, …), explain, seed."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "attribution": describe(self.attribution),
            "attacks": {k: describe(v) for k, v in self.attacks.items()},
            "metrics": [describe_metric(m) for m in self.metrics.values()],
            "explain": self.explain,
            "seed": self.seed,
        }

    def cost(self) -> float:
        """``Σ_A steps·restarts + 2·#attacks`` attribution passes per sample."""
        return float(sum(getattr(a, "steps", 1) * getattr(a, "restarts", 1) for a in self.attacks.values()) + 2 * len(self.attacks))

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Per-sample columns (see the class docstring) for ``x: [b, C, H, W]``, ``y, index: [b]``.

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            out, _ = self._run(model, x, y, index, keep_maps=False)
        return out

    def attack_maps(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Images for a few samples: ``{A: (x [n,C,H,W], a(x) [n,H,W], x̃ [n,C,H,W], a(x̃) [n,H,W])}``.

        The same per-sample seeds as :meth:`evaluate`, so ``x̃`` is the iterate whose metrics
        were reported. Callers pass only the few samples they show (it re-runs the attacks).
        ``check_range`` as in :meth:`evaluate`.
        """
        with contract.range_option(check_range):
            _, maps = self._run(model, x, y, index, keep_maps=True)
        return maps

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, keep_maps: bool
    ) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]]:
        check_batch(x, y, index, model)
        x = x.detach()
        y = y.to(torch.int64)
        out: dict[str, Tensor] = {}
        maps: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        with eval_mode(model):
            if self.explain == "pred":
                with torch.no_grad():
                    y = model(x).argmax(dim=1)
            seeds = index.to(torch.int64) + self.seed
            noise = attribution_noise(self.attribution, x, RandomStreams(x, None, seeds))
            g0 = attribution_with_noise(self.attribution, model, x, y, noise).detach()
            for j, (name, attack) in enumerate(self.attacks.items()):
                res = attack(model, x, y, sample_seeds=seeds * _ATTACK_STRIDE + j)
                g1 = attribution_with_noise(self.attribution, model, res.x_adv, y, noise).detach()
                out[f"{name}/success"] = res.success.bool()
                out[f"{name}/skipped"] = res.skipped_misclassified.bool()
                out[f"{name}/criterion"] = res.criterion.detach().to(torch.float32)
                for mname, metric in self.metrics.items():
                    vals = metric.per_sample(g0, g1)
                    for key in metric.keys:
                        out[_metric_column(name, mname, key)] = vals[key].detach().to(torch.float32)
                if keep_maps:
                    maps[name] = (x, g0.abs().sum(1), res.x_adv.detach(), g1.abs().sum(1))
        return out, maps

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """Per attack: ``attacked_frac``, ``success_rate``, ``criterion`` and metric means over attacked samples."""
        summary: dict[str, float] = {}
        for a in self.attacks:
            attacked = ~results[f"{a}/skipped"].bool()
            summary[f"{a}/attacked_frac"] = masked_mean(attacked)
            summary[f"{a}/success_rate"] = masked_mean(results[f"{a}/success"], attacked)
            summary[f"{a}/criterion"] = masked_mean(results[f"{a}/criterion"], attacked)
            for mname, metric in self.metrics.items():
                for key in metric.keys:
                    col = _metric_column(a, mname, key)
                    summary[col] = masked_mean(results[col], attacked)
        return summary
