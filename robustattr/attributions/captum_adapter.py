"""Any Captum attribution method as a robustattr base attribution (evaluation only)."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, ensure_grad_mode
from robustattr.registry import register


def _captum_class(method: str) -> type:
    """Import ``captum.<module>.<Class>`` from its dotted name; clear errors if captum or the class is missing."""
    if not isinstance(method, str) or not method.startswith("captum.") or method.count(".") < 2:
        raise ValueError(f"method must name a Captum class, e.g. 'captum.attr.IntegratedGradients', got {method!r}")
    module_name, cls_name = method.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] == "captum":
            raise RuntimeError(
                f"CaptumAttribution({method!r}) needs the optional dependency captum: pip install captum"
            ) from err
        raise
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"method {method!r}: {module_name} has no class {cls_name!r}")
    return cls


@register("attribution", "captum")
class CaptumAttribution(Attribution):
    """``g = captum_cls(model, **init_kwargs).attribute(x, target=y, **kwargs)``, shaped like x.

    Kokhlikyan et al., "Captum: A unified and generic model interpretability library for
    PyTorch", arXiv:2009.07896. Lets any Captum method serve as the base attribution of
    robustattr's metrics, attacks' evaluation and certification. Captum is an optional
    dependency: constructing this class without it raises ``RuntimeError``.

    Not differentiable (Captum computes gradients without a graph and some methods run under
    ``no_grad``): ``differentiable = False``, so ``create_graph=True`` raises ``ValueError`` and
    a training loss refuses it. Captum receives a detached copy of x, so x, x.grad and the
    model's mode are left as they were; the result is detached.

    Args:
        method: dotted class name, e.g. ``"captum.attr.IntegratedGradients"`` (default
            ``"captum.attr.Saliency"``; note Captum's Saliency returns ``|∇|`` unless
            ``abs=False`` is passed).
        init_kwargs: keyword arguments of the Captum constructor after the model; a string
            value of ``"layer"`` is resolved as a dotted module path of the model.
        per_sample_kwargs: names of ``attribute`` keyword arguments that hold one row per
            sample (e.g. a per-sample ``"baselines"`` tensor ``[B, C, H, W]``): inside
            smoothing wrappers they follow their sample (see :meth:`with_rows`).
        attribute_kwargs: keyword arguments of ``attribute`` as a dict; needed for names that
            clash with this constructor's (Captum IG's ``method``).
        **kwargs: further keyword arguments of ``attribute`` (``target`` is always y).

    Shapes: ``[B, C, H, W] → [B, C, H, W]`` (a method returning another shape raises ``ValueError``).
    """

    checks_model_output_at_entry = True

    differentiable = False

    def __init__(
        self,
        method: str = "captum.attr.Saliency",
        init_kwargs: dict[str, Any] | None = None,
        per_sample_kwargs: tuple[str, ...] = (),
        attribute_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._cls = _captum_class(method)
        kwargs = {**(attribute_kwargs or {}), **kwargs}
        if "target" in kwargs:
            raise ValueError("kwargs must not contain 'target': the explained class is always y")
        if kwargs.get("return_convergence_delta"):
            raise ValueError("return_convergence_delta=True is not supported: the attribution must be one tensor")
        missing = [k for k in per_sample_kwargs if k not in kwargs]
        if missing:
            raise ValueError(f"per_sample_kwargs {missing} are not among kwargs {sorted(kwargs)}")
        self.method = method
        self.init_kwargs = dict(init_kwargs or {})
        self.per_sample_kwargs = tuple(per_sample_kwargs)
        self.kwargs = kwargs

    def with_rows(self, rows: Tensor) -> Attribution:
        """A copy whose per-sample kwargs are indexed by ``rows`` (``self`` if there are none)."""
        if not self.per_sample_kwargs:
            return self
        out = copy.copy(self)
        out.kwargs = dict(self.kwargs)
        for key in self.per_sample_kwargs:
            value = self.kwargs[key]
            out.kwargs[key] = value[rows.to(value.device)]
        return out

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        ensure_grad_mode()
        init = dict(self.init_kwargs)
        if isinstance(init.get("layer"), str):
            from robustattr.attributions.grad_cam import resolve_layer

            init["layer"] = resolve_layer(model, init["layer"])
        explainer = self._cls(model, **init)
        with torch.enable_grad():
            g = explainer.attribute(x.detach().clone(), target=y, **self.kwargs)
        if not isinstance(g, Tensor) or g.shape != x.shape:
            shape = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(f"{self.method} returned {shape}, not a tensor shaped like x {tuple(x.shape)}")
        return g.detach()
