"""Guided Backpropagation: the input gradient with negative gradients stopped at every ReLU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, chunked_rows, logit_input_grad
from robustattr.registry import register


class _GuidedReLUFn(torch.autograd.Function):
    """``y = max(x, 0)``; backward ``∂x = max(∂y, 0) · 1[x > 0]`` (written with torch ops, so
    it is itself differentiable w.r.t. ``∂y`` when ``create_graph=True``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


class _GuidedSoftplusFn(torch.autograd.Function):
    """``y = softplus_β(x)``; backward ``∂x = max(∂y, 0) · σ(β x)`` (the smooth surrogate's rule)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, beta: float, threshold: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        return F.softplus(x, beta=beta, threshold=threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * torch.sigmoid(ctx.beta * x), None, None


class _GuidedReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _GuidedReLUFn.apply(x)


class _GuidedSoftplus(nn.Module):
    def __init__(self, beta: float, threshold: float) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: Tensor) -> Tensor:
        return _GuidedSoftplusFn.apply(x, self.beta, self.threshold)


@contextmanager
def guided_activations(model: nn.Module) -> Iterator[int]:
    """Temporarily replace every ``nn.ReLU``/``nn.Softplus`` child of ``model`` by its guided version.

    Yields the number of swapped modules; every original module object is put back on exit
    (also on error), so no hook or replacement outlives the call. In-place ReLUs (timm's
    ``act_layer(inplace=True)``) are replaced by an out-of-place function, which computes the
    same forward values.
    """
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.ReLU):
                    guided: nn.Module = _GuidedReLU()
                elif isinstance(child, nn.Softplus):
                    guided = _GuidedSoftplus(float(child.beta), float(child.threshold))
                else:
                    continue
                guided.train(child.training)
                swaps.append((parent, name, child))
                setattr(parent, name, guided)
        yield len(swaps)
    finally:
        for parent, name, child in reversed(swaps):
            setattr(parent, name, child)


@register("attribution", "guided_backprop")
class GuidedBackprop(Attribution):
    """Guided Backpropagation: ``∇_x f_y`` back-propagated with ``∂x = max(∂y, 0) · 1[x > 0]`` at every ReLU.

    Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
    Convolutional Net", ICLR 2015 workshop (arXiv:1412.6806); equal to Captum's
    ``GuidedBackprop``. Implemented by swapping each ``nn.ReLU`` module for a guided
    autograd function for the duration of the call (no global hooks; the original modules
    are restored). ReLUs applied functionally (``F.relu`` inside ``forward``) cannot be
    swapped, so a model without any ``nn.ReLU``/``nn.Softplus`` module raises ``ValueError``.

    On the softplus surrogate (``nn.Softplus(β)`` in place of ReLU) the rule becomes
    ``∂x = max(∂y, 0) · σ(β x)``, the smooth counterpart, so attacks on the surrogate target
    the guided map and not plain saliency.

    Differentiable: yes, with ``create_graph=True`` (the guided backward is written with
    differentiable tensor ops). As for saliency on a ReLU network, its derivatives w.r.t. the
    input are zero almost everywhere; on the surrogate they are not.

    Args:
        internal_batch_size: rows per forward/backward chunk (``None``: the whole batch).

    Shapes: ``[B, C, H, W] → [B, C, H, W]``.
    """

    checks_model_output_at_entry = True

    def __init__(self, internal_batch_size: int | None = None) -> None:
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        with guided_activations(model) as n_swapped:
            if n_swapped == 0:
                raise ValueError(
                    f"GuidedBackprop found no nn.ReLU or nn.Softplus module in {type(model).__name__}; "
                    "functional activations cannot be guided"
                )
            return chunked_rows(
                lambda s: logit_input_grad(model, x[s], y[s], create_graph), x.shape[0], self.internal_batch_size
            )
