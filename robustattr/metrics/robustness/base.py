"""Shared machinery of the robustness metrics that re-explain perturbed inputs.

Unlike :class:`~robustattr.metrics.AttributionMetric` (which compares two given maps), a
:class:`RobustnessMetric` is updated with ``(model, x, y)`` and owns an attribution method:
it explains ``x``, draws n perturbed copies of every sample, explains them all (folded into
the batch dimension, ``internal_batch_size`` rows per call) and reduces a per-copy score to
one value per sample. Definitions, defaults and normalisations follow Quantus 0.6 (Hedström
et al., "Quantus: An Explainable AI Toolkit for Responsible Evaluation of Neural Network
Explanations and Beyond", JMLR 2023, arXiv:2202.06861); where robustattr deviates (per-sample
instead of batch-wide normalisation) the class docstring says so.

How an evaluator calls them::

    metric = MaxSensitivity(attribution=Saliency(), n_samples=50, seed=0)
    metric.update(model, x, y, index=dataset_index)   # x: [B, C, H, W] in [0, 1], y: [B]
    metric.compute()                                  # mean over samples with a value
    metric.per_sample(model, x, y, index=...)         # [B] (NaN where undefined)

``index`` (dataset indices ``[B]``) seeds sample i's perturbations with ``seed + index_i``, so
results do not depend on batching or on how samples are spread over processes. The
perturbation hook: ``perturbation=`` (a callable, e.g. :class:`UniformNoise`) chooses the
law, and ``x_perturbed=`` (``[n, B, C, H, W]``) injects exact perturbed inputs (tests feed
Quantus's own draws through it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from robustattr.attributions import Attribution, Saliency
from robustattr.utils import contract, eval_mode, per_sample_generators

__all__ = [
    "GaussianNoise",
    "RobustnessMetric",
    "UniformNoise",
    "normalise_by_max",
]

Generators = Sequence[torch.Generator] | torch.Generator | None


def _draw(sampler: Any, x: Tensor, n: int, generators: Generators) -> Tensor:
    """``[n, B, *x.shape[1:]]`` from ``sampler(shape, generator)``: per-sample columns or one stream."""
    B, shape = x.shape[0], tuple(x.shape[1:])
    if generators is None or isinstance(generators, torch.Generator):
        return sampler((n, B, *shape), generators)
    if len(generators) != B:
        raise ValueError(f"generators must hold one generator per sample ({B}), got {len(generators)}")
    return torch.stack([sampler((n, *shape), g) for g in generators], dim=1)


@dataclass(frozen=True)
class UniformNoise:
    """Additive noise ``x + η``, ``η_j ~ U(low, high)`` i.i.d. per element (Quantus ``batch_uniform_noise``).

    Quantus's defaults: ``U(−0.2, 0.2)`` for Max-/Avg-Sensitivity (``lower_bound=0.2``) and
    ``U(0.02, 0.2)`` — positive only — for the relative stabilities (``upper_bound=0.2``).
    The result is not clipped to [0, 1] (as in Quantus).
    """

    low: float = -0.2
    high: float = 0.2

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"high must be > low, got low={self.low}, high={self.high}")

    def __call__(self, x: Tensor, n: int, generators: Generators = None) -> Tensor:
        """``[B, C, H, W] → [n, B, C, H, W]`` perturbed copies."""

        def sampler(shape: tuple[int, ...], g: torch.Generator | None) -> Tensor:
            return torch.rand(shape, generator=g, device=x.device, dtype=x.dtype) * (self.high - self.low) + self.low

        return x.unsqueeze(0) + _draw(sampler, x, n, generators)


@dataclass(frozen=True)
class GaussianNoise:
    """Additive noise ``x + η``, ``η ~ N(mean, std² I)`` (Quantus ``batch_gaussian_noise``; not clipped)."""

    std: float = 0.1
    mean: float = 0.0

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")

    def __call__(self, x: Tensor, n: int, generators: Generators = None) -> Tensor:
        """``[B, C, H, W] → [n, B, C, H, W]`` perturbed copies."""

        def sampler(shape: tuple[int, ...], g: torch.Generator | None) -> Tensor:
            return torch.randn(shape, generator=g, device=x.device, dtype=x.dtype) * self.std + self.mean

        return x.unsqueeze(0) + _draw(sampler, x, n, generators)


def normalise_by_max(a: Tensor) -> Tensor:
    """``a / max|a|`` per sample (over all non-batch dims); all-zero maps are returned unchanged.

    Quantus's ``normalise_by_max`` divides by the maximum over the whole *batch* unless
    ``normalise_axes`` is given; robustattr normalises each sample on its own so a sample's
    value does not depend on its batch.
    """
    m = a.abs().flatten(1).amax(dim=1).view(-1, *([1] * (a.dim() - 1)))
    return torch.where(m > 0, a / torch.where(m > 0, m, torch.ones_like(m)), a)


def flat_norm(t: Tensor, p: float = 2.0) -> Tensor:
    """``‖t_i‖_p`` of each row flattened: ``[N, ...] → [N]``."""
    return torch.linalg.vector_norm(t.flatten(1), ord=p, dim=1)


def _nanmax(v: Tensor, dim: int) -> Tensor:
    """Max ignoring NaN (NaN only where every entry is NaN), like ``numpy.nanmax``."""
    nan = torch.isnan(v)
    out = v.masked_fill(nan, -math.inf).amax(dim=dim)
    return out.masked_fill(nan.all(dim=dim), math.nan)


@dataclass
class Chunk:
    """What a score needs for ``N`` perturbed rows (row r is a copy of sample ``src[r]``).

    Attributes:
        x, xp: original and perturbed inputs ``[N, C, H, W]``.
        a, ap: post-processed attributions of x and xp ``[N, C, H, W]``.
        y: explained classes ``[N]``.
        out_x, out_xp: what :meth:`RobustnessMetric.forward_outputs` returned for x and xp
            (logits ``[N, K]`` and, for the representation stability, hidden features), or
            None when the metric needs no forward pass.
    """

    x: Tensor
    xp: Tensor
    a: Tensor
    ap: Tensor
    y: Tensor
    out_x: tuple[Tensor, ...] | None
    out_xp: tuple[Tensor, ...] | None


class RobustnessMetric(Metric):
    """Base: per-sample ``R_j s(x, x̃_j)`` over n perturbed copies ``x̃_j``, accumulated with sum states.

    Subclasses implement :meth:`score` (``[N]`` per perturbed row, float64) and set
    ``reduction`` (``"max"`` or ``"mean"`` over the copies). States: ``total`` (sum of the
    per-sample values that exist), ``count`` (their number) and ``nan_count`` (samples without
    a value, e.g. a perturbation changed the prediction), all ``dist_reduce_fx="sum"``, so DDP
    reduction is exact. :meth:`compute` returns ``total / count`` (NaN when ``count == 0``).

    Args:
        attribution: the explanation method (default :class:`~robustattr.attributions.Saliency`).
        n_samples: n, perturbed copies per sample.
        perturbation: callable ``(x [B, C, H, W], n, generators) -> [n, B, C, H, W]``.
        seed: base seed; sample i uses ``seed + index_i`` when ``index`` is given, otherwise
            the metric's own stream seeded once with ``seed``.
        internal_batch_size: perturbed rows explained per attribution call (``None``: all).
        normalise: divide each attribution by its max ``|·|`` (per sample, see
            :func:`normalise_by_max`).
        take_abs: take ``|·|`` of each attribution after normalising (Quantus's ``abs``).
        nan_on_prediction_change: a sample whose prediction changes under any of its
            perturbations gets NaN (Quantus's ``return_nan_when_prediction_changes``); when
            False, NaNs from degenerate scores (0/0) are ignored by the reduction.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better: bool | None = False
    name: str = "robustness"
    reduction: str = "max"

    def __init__(
        self,
        attribution: Attribution | None = None,
        n_samples: int = 200,
        perturbation: Any = None,
        seed: int = 0,
        internal_batch_size: int | None = 256,
        normalise: bool = False,
        take_abs: bool = False,
        nan_on_prediction_change: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        if perturbation is not None and not callable(perturbation):
            raise ValueError(f"perturbation must be callable (x, n, generators) -> [n, B, ...], got {perturbation!r}")
        super().__init__(**kwargs)
        self.attribution = attribution if attribution is not None else Saliency()
        self.n_samples = n_samples
        self.perturbation = perturbation
        self.seed = seed
        self.internal_batch_size = internal_batch_size
        self.normalise = normalise
        self.take_abs = take_abs
        self.nan_on_prediction_change = nan_on_prediction_change
        self._stream: torch.Generator | None = None
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("nan_count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    # ------------------------------------------------------------------ pieces
    def postprocess(self, a: Tensor) -> Tensor:
        """Quantus's order: normalise (if ``normalise``), then ``|·|`` (if ``take_abs``)."""
        if self.normalise:
            a = normalise_by_max(a)
        return a.abs() if self.take_abs else a

    def explain(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Post-processed, detached attributions ``[N, C, H, W]`` (``internal_batch_size`` rows per call)."""
        chunk = self.internal_batch_size or x.shape[0]
        parts = [self.attribution(model, x[i : i + chunk], y[i : i + chunk]).detach() for i in range(0, x.shape[0], chunk)]
        return self.postprocess(torch.cat(parts, dim=0))

    def generators(self, x: Tensor, index: Tensor | Sequence[int] | None) -> Generators:
        """Per-sample generators seeded ``seed + index`` (or the metric's stream when ``index`` is None)."""
        if index is None:
            if self._stream is None or self._stream.device != x.device:
                self._stream = torch.Generator(device=x.device).manual_seed(self.seed)
            return self._stream
        idx = torch.as_tensor(index).reshape(-1)
        if idx.shape[0] != x.shape[0]:
            raise ValueError(f"index must have one entry per sample ({x.shape[0]}), got {idx.shape[0]}")
        return per_sample_generators((idx.to(torch.int64) + self.seed).tolist(), x.device)

    def default_perturbation(self) -> Any:
        """The perturbation used when none is given (Quantus's default of the metric)."""
        return UniformNoise(-0.2, 0.2)

    def perturb(self, x: Tensor, index: Tensor | Sequence[int] | None = None) -> Tensor:
        """``[n, B, C, H, W]`` perturbed copies of ``x`` from the seeded streams."""
        fn = self.perturbation if self.perturbation is not None else self.default_perturbation()
        xp = fn(x, self.n_samples, self.generators(x, index))
        if xp.shape != (self.n_samples, *x.shape):
            raise ValueError(f"perturbation returned {tuple(xp.shape)}, expected {(self.n_samples, *x.shape)}")
        return xp

    def needs_forward(self) -> bool:
        """Whether :meth:`score` or the prediction check needs the model's outputs."""
        return self.nan_on_prediction_change

    def forward_outputs(self, model: nn.Module, z: Tensor) -> tuple[Tensor, ...]:
        """Model outputs for rows ``z`` under ``no_grad``: ``(logits [N, K],)``."""
        with torch.no_grad():
            return (model(z),)

    def changed(self, chunk: Chunk) -> Tensor:
        """``[N]`` bool: the perturbed prediction differs from the original one."""
        assert chunk.out_x is not None and chunk.out_xp is not None
        return chunk.out_xp[0].argmax(dim=1) != chunk.out_x[0].argmax(dim=1)

    def score(self, chunk: Chunk) -> Tensor:
        """Per perturbed row ``[N]`` (float64)."""
        raise NotImplementedError

    def reduce(self, s: Tensor) -> Tensor:
        """``[n, B] → [B]``: max or mean over the copies (NaN-propagating iff ``nan_on_prediction_change``)."""
        if self.nan_on_prediction_change:
            return s.amax(dim=0) if self.reduction == "max" else s.mean(dim=0)
        return _nanmax(s, 0) if self.reduction == "max" else s.nanmean(dim=0)

    # ------------------------------------------------------------------ API
    def per_sample(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor | Sequence[int] | None = None,
        x_perturbed: Tensor | None = None,
        *,
        check_range: bool = True,
    ) -> Tensor:
        """One value per sample ``[B]`` (float64; NaN where undefined).

        Args:
            model: the classifier (run in eval mode; modes are restored).
            x: inputs ``[B, C, H, W]``; y: explained classes ``[B]``.
            index: dataset indices ``[B]`` seeding each sample's perturbations (``seed + index``).
            x_perturbed: explicit perturbed inputs ``[n, B, C, H, W]`` (the injection hook);
                ``n`` may differ from ``n_samples``.
            check_range: ``False`` lets ``x`` outside [0, 1] through the input check
                (:func:`robustattr.utils.contract.range_option`).
        """
        if x.dim() < 2 or y.shape != (x.shape[0],):
            raise ValueError(f"x must be [B, ...] and y [B], got {tuple(x.shape)} and {tuple(y.shape)}")
        if not torch.is_floating_point(x):
            raise ValueError(f"x must be a floating tensor, got {x.dtype}")
        x, y = x.detach(), y.detach()
        idx = None if index is None else torch.as_tensor(index).reshape(-1)
        # The contract is checked once, on x; the perturbed copies may leave [0, 1] (the metrics'
        # definitions do not clip), so the attributions evaluated on them are nested, unchecked calls.
        with contract.range_option(check_range), contract.entry(labels=y, index=idx) as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y, index=idx)
            xp = self.perturb(x, index) if x_perturbed is None else x_perturbed.detach().to(x.dtype)
            if xp.dim() != x.dim() + 1 or xp.shape[1:] != x.shape:
                raise ValueError(f"x_perturbed must be [n, *x.shape]={('n', *x.shape)}, got {tuple(xp.shape)}")
            return self._evaluate(model, x, y, xp)

    def _evaluate(self, model: nn.Module, x: Tensor, y: Tensor, xp: Tensor) -> Tensor:
        n, B = xp.shape[0], x.shape[0]
        a = self.explain(model, x, y)
        fwd = self.needs_forward()
        out_x = self.forward_outputs(model, x) if fwd else None
        z = xp.reshape(n * B, *x.shape[1:])
        src = torch.arange(B, device=x.device).repeat(n)  # row i·B + b is copy i of sample b
        yy = y.repeat(n)
        step = self.internal_batch_size or n * B
        scores, changed = [], []
        for i in range(0, n * B, step):
            s = slice(i, min(i + step, n * B))
            r = src[s]
            ap = self.explain(model, z[s], yy[s])
            out_xp = self.forward_outputs(model, z[s]) if fwd else None
            chunk = Chunk(
                x[r], z[s], a[r], ap, yy[s],
                None if out_x is None else tuple(o[r] for o in out_x), out_xp,
            )
            scores.append(self.score(chunk))
            if self.nan_on_prediction_change:
                changed.append(self.changed(chunk))
        s_all = torch.cat(scores).view(n, B)
        if self.nan_on_prediction_change:
            s_all = s_all.masked_fill(torch.cat(changed).view(n, B), math.nan)
        return self.reduce(s_all)

    def update(  # type: ignore[override]
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor | Sequence[int] | None = None,
        x_perturbed: Tensor | None = None,
        *,
        check_range: bool = True,
    ) -> None:
        """Add the per-sample values of a batch (see :meth:`per_sample`)."""
        v = self.per_sample(model, x, y, index=index, x_perturbed=x_perturbed, check_range=check_range).to(self.total.device)
        ok = ~torch.isnan(v)
        self.total = self.total + v[ok].sum()
        self.count = self.count + ok.sum()
        self.nan_count = self.nan_count + (~ok).sum()

    def compute(self) -> Tensor:  # type: ignore[override]
        """Mean over samples with a value (float64; NaN if there are none)."""
        return torch.where(self.count > 0, self.total / self.count.clamp_min(1), torch.full_like(self.total, math.nan))
