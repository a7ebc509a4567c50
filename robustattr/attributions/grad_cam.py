"""Grad-CAM: class activation maps from a named layer, upsampled to the input and shaped like x."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, chunked_rows, ensure_grad_mode
from robustattr.registry import register
from robustattr.utils import eval_mode

_MODES = ("bilinear", "nearest", "bicubic")


def last_spatial_layer(model: nn.Module, x: Tensor) -> str:
    """The module path of the last module (in call order) whose output is ``[B, K, h, w]`` with ``h·w > 1``.

    Found with one forward pass of ``x[:1]`` under ``no_grad`` in eval mode (BatchNorm
    statistics untouched; modes restored); for a convolutional classifier it is the output of
    the last convolutional stage (e.g. ``"1.net.layer4"`` of a timm resnet, ``"1.features"``
    of a ``build_model(SmallCNN())`` network).
    """
    seen: list[str] = []
    handles = []

    def make_hook(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
                seen.append(name)

        return hook

    try:
        for name, m in model.named_modules():
            if name:
                handles.append(m.register_forward_hook(make_hook(name)))
        with torch.no_grad(), eval_mode(model):
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(f"{type(model).__name__} has no module with a spatial output [B, K, h, w]; pass layer=")
    return seen[-1]


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule of ``model`` at the dotted path ``layer`` (as in ``model.named_modules()``)."""
    try:
        return model.get_submodule(layer)
    except AttributeError as err:
        names = [n for n, _ in model.named_modules() if n]
        hint = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(f"layer {layer!r} is not a submodule of {type(model).__name__} (e.g. {hint})") from err


@register("attribution", "grad_cam")
class GradCAM(Attribution):
    """``L(x) = up(ReLU(Σ_k α_k A_k))``, ``α_k = mean_{u,v} ∂f_y/∂A_k[u,v]``, broadcast over x's channels.

    Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, "Grad-CAM: Visual Explanations from
    Deep Networks via Gradient-based Localization", ICCV 2017 (arXiv:1610.02391). ``A`` is
    the output ``[B, K, h, w]`` of the layer named ``layer`` (a dotted module path as listed by
    ``model.named_modules()``, e.g. ``"1.features.7"`` for a ``build_model(SmallCNN())``
    network); ``up`` resizes ``[B, 1, h, w]`` to ``[B, 1, H, W]`` with ``F.interpolate``
    (bilinear, ``align_corners=False``). Equal to Captum's
    ``LayerAttribution.interpolate(LayerGradCam(model, layer).attribute(x, y,
    relu_attributions=True), (H, W), "bilinear")``, repeated over the C input channels so the
    result has the shape of ``x`` and works with every metric, attack and certifier
    (``Σ_c |L_c| = C · L`` for the rank and top-k maps: the same ranking).

    Differentiable: yes, with ``create_graph=True`` (the layer gradient is taken with a graph;
    the ReLU and the interpolation are differentiable).

    Args:
        layer: dotted path of the layer whose output is ``A`` (choose a layer whose output is
            not modified in place afterwards, e.g. a block output rather than a BatchNorm
            followed by an in-place ReLU). ``None`` (default): the last module with a spatial
            output, found by :func:`last_spatial_layer` on each call (one extra forward pass
            of one sample).
        relu: apply the ReLU of the paper (default True; Captum's default is False).
        interpolate_mode: ``"bilinear"`` (default), ``"nearest"`` or ``"bicubic"``.
        internal_batch_size: rows per forward/backward chunk (``None``: the whole batch).

    Shapes: ``[B, C, H, W] → [B, C, H, W]`` (the same map in every channel).
    """

    checks_model_output_at_entry = True

    def __init__(
        self,
        layer: str | None = None,
        relu: bool = True,
        interpolate_mode: str = "bilinear",
        internal_batch_size: int | None = None,
    ) -> None:
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ValueError(f"layer must be a non-empty module path or None, got {layer!r}")
        if interpolate_mode not in _MODES:
            raise ValueError(f"interpolate_mode must be one of {_MODES}, got {interpolate_mode!r}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        self.layer = layer
        self.relu = relu
        self.interpolate_mode = interpolate_mode
        self.internal_batch_size = internal_batch_size

    def layer_cam(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        """The un-upsampled map ``Σ_k α_k A_k`` (ReLU'd if ``relu``): ``[B, 1, h, w]``."""
        ensure_grad_mode()
        layer = self.layer if self.layer is not None else last_spatial_layer(model, x)
        module = resolve_layer(model, layer)
        acts: list[Tensor] = []

        def hook(_m: nn.Module, _inp: Any, out: Any) -> Tensor:
            if not isinstance(out, Tensor) or out.dim() < 3:
                raise ValueError(f"layer {layer!r} must output one tensor [B, K, h, w], got {type(out).__name__}")
            if not out.requires_grad:  # frozen weights and x without grad: make A a leaf to differentiate
                out = out.detach().requires_grad_(True)
            acts.append(out)
            return out

        handle = module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = model(x)
                if len(acts) != 1:
                    raise ValueError(f"layer {layer!r} ran {len(acts)} times in one forward pass; Grad-CAM needs exactly once")
                A = acts[0]
                sel = logits.gather(1, y.view(-1, 1).long()).sum()
                (grad,) = torch.autograd.grad(sel, A, create_graph=create_graph)
        finally:
            handle.remove()
        alpha = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
        cam = (alpha * A).sum(dim=1, keepdim=True)
        cam = F.relu(cam) if self.relu else cam
        return cam if create_graph else cam.detach()

    def _one_chunk(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool) -> Tensor:
        cam = self.layer_cam(model, x, y, create_graph)
        kw = {} if self.interpolate_mode == "nearest" else {"align_corners": False}
        up = F.interpolate(cam, size=tuple(x.shape[2:]), mode=self.interpolate_mode, **kw)
        return up.expand(-1, x.shape[1], *([-1] * (x.dim() - 2))).contiguous()

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return chunked_rows(lambda s: self._one_chunk(model, x[s], y[s], create_graph), x.shape[0], self.internal_batch_size)
