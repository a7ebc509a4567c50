"""Quantus-definition robustness metrics of the attributions as an evaluator.

Each metric re-explains perturbed copies of a sample and reduces a per-copy score to one value
per sample (:mod:`robustattr.metrics.robustness`; definitions and defaults of Quantus 0.6:
A. Hedström et al., "Quantus: An Explainable AI Toolkit for Responsible Evaluation of Neural
Network Explanations and Beyond", JMLR 2023, arXiv:2202.06861):

- Max-/Avg-Sensitivity ``max_j / mean_j ‖g(x) − g(x̃_j)‖₂ / ‖g(x)‖₂`` (C.-K. Yeh, C.-Y. Hsieh,
  A. S. Suggala, D. I. Inouye & P. Ravikumar, "On the (In)fidelity and Sensitivity of
  Explanations", NeurIPS 2019, arXiv:1901.09392);
- Local Lipschitz Estimate ``max_j ‖g(x) − g(x̃_j)‖₂ / ‖x − x̃_j‖₂`` (D. Alvarez-Melis &
  T. S. Jaakkola, "On the Robustness of Interpretability Methods", arXiv:1806.08049, 2018);
- Continuity under translations (G. Montavon, W. Samek & K.-R. Müller, Digital Signal
  Processing 2018, arXiv:1706.07979);
- Consistency (S. Dasgupta, N. Frost & M. Moshkovitz, ICML 2022, arXiv:2202.00734);
- Relative Input / Output / Representation Stability (C. Agarwal et al., "Rethinking Stability
  for Attribution-based Explanations", arXiv:2203.06877, 2022).

The same evaluator backs ``AttributionRobustnessCallback(robustness=...)`` (keys
``val_attr/robustness/<metric>``), ``certify.py robustness`` and the study (registry name
``robustness``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr import registry
from robustattr.attributions.base import Attribution
from robustattr.evaluation._common import check_batch, describe_metric, masked_mean
from robustattr.evaluation.base import Evaluator, describe
from robustattr.metrics.robustness import Consistency, RobustnessMetric
from robustattr.registry import register
from robustattr.utils import contract, eval_mode

__all__ = ["DEFAULT_ROBUSTNESS_METRICS", "RobustnessEvaluator"]

#: Metrics computed by default (the three of the speed benchmark of the metrics).
DEFAULT_ROBUSTNESS_METRICS: tuple[str, ...] = ("max_sensitivity", "local_lipschitz_estimate", "relative_input_stability")


def _robustness_names() -> list[str]:
    return [n for n in registry.available("metric") if issubclass(registry.get("metric", n), RobustnessMetric)]


def _build(spec: str | RobustnessMetric, attribution: Attribution | None) -> RobustnessMetric:
    """A metric instance from a registry name (with ``attribution`` if given) or an instance (as is)."""
    if isinstance(spec, RobustnessMetric):
        return spec
    names = _robustness_names()
    if not isinstance(spec, str) or spec not in names:
        raise ValueError(f"metrics: {spec!r} is not a robustness metric; available: {', '.join(names)}")
    kwargs = {} if attribution is None else {"attribution": attribution}
    metric = registry.build("metric", spec, **kwargs)
    assert isinstance(metric, RobustnessMetric)
    return metric


def _describe(metric: RobustnessMetric) -> dict[str, Any]:
    """:func:`describe_metric` plus the constructor parameters of the metric's robustattr base classes.

    Some metrics pass most parameters on through ``**kwargs`` (e.g. the relative stabilities);
    every ``__init__`` of the class hierarchy up to :class:`RobustnessMetric` is read.
    """
    out = describe_metric(metric)
    for cls in type(metric).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, RobustnessMetric)) or "__init__" not in vars(cls):
            continue
        for pname, p in inspect.signature(cls.__init__).parameters.items():
            if pname == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or pname in out:
                continue
            if hasattr(metric, pname):
                out[pname] = describe(getattr(metric, pname))
    return out


@register("evaluator", "robustness")
class RobustnessEvaluator(Evaluator):
    """Quantus-definition robustness metrics of the attributions, one value per sample and metric.

    For every sample i and metric ``m`` (see the module docstring for the formulas): the column
    ``m`` holds ``m.per_sample(model, x_i, ŷ_i, index=seed + index_i)``, where ``ŷ`` is the
    explained class. Each metric draws sample i's perturbations from its own generator seeded
    ``metric.seed + seed + index_i``, so a value does not depend on batching or on how samples
    are spread over processes — except for Consistency, which compares a sample with the other
    samples of its batch by definition (see :meth:`warnings`), and for attributions that draw
    their own noise (SmoothGrad, GradientSHAP, …: they draw from their own stream).

    Args:
        metrics: registry names of robustness metrics (``available("metric")`` that are
            :class:`~robustattr.metrics.RobustnessMetric`; built with their Quantus defaults,
            e.g. n = 200 perturbations) or metric instances (used as they are, with their own
            attribution). Default: Max-Sensitivity, Local Lipschitz Estimate, Relative Input
            Stability.
        attribution: the attribution explained by the metrics given **by name** (one shared
            instance); ``None``: each metric's default (:class:`~robustattr.attributions.Saliency`).
            Metric instances keep the attribution they were built with.
        explain: ``"pred"`` (default: the predicted class ``argmax f(x)``) or ``"label"`` (the
            dataset label; every sample is evaluated either way).
        seed: added to the dataset index to seed each sample's perturbations.

    Columns (each ``[b]``, float64, NaN where a metric has no value, e.g. the relative
    stabilities when a perturbation changes the prediction): one per metric, named by the
    metric's ``name`` (``max_sensitivity``, ``local_lipschitz_estimate``, …).

    Summary per metric ``m``: ``m`` (mean over the samples with a value; NaN if none) and
    ``m/nan_frac`` (fraction of samples without a value).

    Cost per sample: ``Σ_m (n_m + 1)`` attributions (``n_m`` perturbed copies of metric m)
    plus a forward per copy for the metrics that compare outputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> ev = RobustnessEvaluator(metrics=["max_sensitivity"])
        >>> out = ev.evaluate(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]), torch.tensor([7, 8]))
        >>> ev.summarize(out)  # a linear model's saliency does not move
        {'max_sensitivity': 0.0, 'max_sensitivity/nan_frac': 0.0}
    """

    name = "robustness"

    def __init__(
        self,
        metrics: Sequence[str | RobustnessMetric] = DEFAULT_ROBUSTNESS_METRICS,
        attribution: Attribution | None = None,
        explain: str = "pred",
        seed: int = 0,
    ) -> None:
        if explain not in ("pred", "label"):
            raise ValueError(f"explain must be 'pred' or 'label', got {explain!r}")
        if isinstance(metrics, (str, RobustnessMetric)):
            metrics = [metrics]
        if attribution is not None and not isinstance(attribution, Attribution):
            raise ValueError(f"attribution must be an Attribution instance or None, got {type(attribution).__name__}")
        built: dict[str, RobustnessMetric] = {}
        for spec in metrics:
            m = _build(spec, attribution)
            if m.name in built:
                raise ValueError(f"metrics lists {m.name!r} twice")
            built[m.name] = m
        if not built:
            raise ValueError("metrics must name at least one robustness metric")
        self.metrics = built
        self.explain, self.seed = explain, int(seed)

    # ---- contract -----------------------------------------------------------------------
    def columns(self, num_classes: int | None = None) -> list[str]:
        """The metric names, in the order given."""
        return list(self.metrics)

    def params(self) -> dict[str, Any]:
        """Every metric with its constructor parameters (attribution, n, perturbation, …), explain, seed."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "metrics": [_describe(m) for m in self.metrics.values()],
            "explain": self.explain,
            "seed": self.seed,
        }

    @property
    def batch_dependent(self) -> list[str]:
        """Names of the metrics whose value of a sample depends on the other samples of its batch."""
        return [n for n, m in self.metrics.items() if isinstance(m, Consistency)]

    def warnings(self, input_shape: Sequence[int]) -> list[str]:
        """Consistency is a within-batch statistic; attributions that draw their own noise are not seeded per sample."""
        out = [
            f"{n} compares each sample with the other samples of its batch (Dasgupta et al., ICML 2022): its "
            "values change with batch_size, with the split of samples over processes and when a run is resumed; "
            "compare them only between identical batches"
            for n in self.batch_dependent
        ]
        for n, m in self.metrics.items():
            if hasattr(m.attribution, "sample_noise"):
                out.append(
                    f"{n}: the attribution {type(m.attribution).__name__} draws its own noise (not seeded per sample), "
                    "so values depend on batching"
                )
        return out

    def cost(self) -> float:
        """``Σ_m (n_m + 1)`` attribution passes per sample."""
        return float(sum(m.n_samples + 1 for m in self.metrics.values()))

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Per-sample metric values ``{metric: [b]}`` for ``x: [b, C, H, W]``, ``y, index: [b]``.

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            check_batch(x, y, index, model)
            x, y, index = x.detach(), y.to(torch.int64), index.to(torch.int64)
            if self.explain == "pred":
                with eval_mode(model), torch.no_grad():
                    y = model(x).argmax(dim=1)
            seeds = index + self.seed
            return {name: m.per_sample(model, x, y, index=seeds).detach() for name, m in self.metrics.items()}

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """Per metric: the mean over samples with a value and the fraction without one (``/nan_frac``)."""
        summary: dict[str, float] = {}
        for name in self.metrics:
            v = results[name]
            ok = ~torch.isnan(v)
            summary[name] = masked_mean(v, ok)
            summary[f"{name}/nan_frac"] = masked_mean(~ok)
        return summary
