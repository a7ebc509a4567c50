"""Helpers shared by the evaluators: the batch contract and NaN-aware reductions for summaries."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.evaluation.base import describe
from robustattr.utils import contract

__all__ = ["check_batch", "describe_metric", "fmt", "lower_median", "masked_mean"]


def fmt(v: float) -> str:
    """The spelling of a grid value in column and summary keys: ``f"{v:g}"`` (``0.001``, ``1e-05``)."""
    return f"{float(v):g}"


def check_batch(x: Tensor, y: Tensor, index: Tensor, model: nn.Module | None = None) -> None:
    """The input contract of an evaluator's batch (:mod:`robustattr.utils.contract`).

    ``x: [b, C, H, W]`` floating, finite, in [0, 1] (unless ``range_check(False)``); ``y`` and
    ``index``: integer ``[b]``; with ``model``, its output at ``x`` must be ``[b, K]`` and finite
    with ``y`` in ``[0, K)`` (one no-grad forward in eval mode). Messages name samples by their
    dataset ``index``.

    Raises:
        ValueError: naming the argument and the offending samples.
    """
    b = x.shape[0] if x.dim() > 0 else 0
    for name, t in (("y", y), ("index", index)):
        if not isinstance(t, Tensor) or t.shape != (b,) or t.dtype not in (torch.int64, torch.int32):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be an integer tensor of shape [{b}], got {shape}")
    if model is None:
        contract.check_batch(x, y, index=index)
    else:
        contract.check_call(model, x, y, index=index)


def lower_median(v: Tensor) -> float:
    """The lower median of ``v: [N]`` (the ⌈N/2⌉-th smallest value, as ``torch.median``); NaN if N = 0.

    NaN entries count as the smallest values (they stand for "not certified"): if the lower
    median falls on one, the result is NaN.
    """
    if v.numel() == 0:
        return math.nan
    w = v.detach().to(torch.float64).flatten()
    w = torch.where(torch.isnan(w), torch.full_like(w, -math.inf), w)
    m = float(w.median())
    return math.nan if m == -math.inf else m


def masked_mean(v: Tensor, keep: Tensor | None = None) -> float:
    """Mean of ``v[keep]`` in float64 (``keep`` None: all); NaN when nothing is kept."""
    w = v.detach().to(torch.float64).flatten()
    if keep is not None:
        w = w[keep.flatten().bool()]
    return float(w.mean()) if w.numel() else math.nan


def describe_metric(metric: Any) -> dict[str, Any]:
    """``{"class", "name", **constructor parameters}`` of an attribution metric (a torchmetrics Module).

    :func:`describe` stops at ``nn.Module`` (a network's parameters are not run parameters);
    a metric's result-changing parameters (``k``, ``w``, ``backend``) are its constructor
    arguments, read back from the attributes of the same name.
    """
    out: dict[str, Any] = {"class": f"{type(metric).__module__}.{type(metric).__qualname__}", "name": metric.name}
    for pname, p in inspect.signature(type(metric).__init__).parameters.items():
        if pname == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if hasattr(metric, pname):
            out[pname] = describe(getattr(metric, pname))
    return out
