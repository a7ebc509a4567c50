"""Shared machinery of differentiable attributions.

Every attribution is called as ``attr(model, x, y, create_graph=False)`` with
``x: [B, C, H, W]`` and ``y: [B]`` (int64 class indices) and returns ``g: [B, C, H, W]``.
With ``create_graph=True`` the result is part of the autograd graph: a loss on it
back-propagates to the model's parameters and, if ``x.requires_grad``, to ``x``.
No attribution mutates ``x``, ``x.grad`` or the model's train/eval mode.

Attributions that cannot build a differentiable graph (e.g. a wrapped Captum method) set
``differentiable = False``; calling them with ``create_graph=True`` raises ``ValueError``, so
a training loss that needs second derivatives refuses them instead of silently getting zeros.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn


def ensure_grad_mode() -> None:
    """Raise if gradients cannot be computed here (Lightning's inference mode is on).

    ``torch.enable_grad()`` does not undo ``torch.inference_mode()``; attributions at
    validation time therefore need ``Trainer(inference_mode=False)``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "attributions need autograd, but torch.inference_mode is enabled. Lightning validates "
            "under inference mode by default: construct the Trainer with inference_mode=False "
            "(train.py does this)."
        )


def check_inputs(x: Tensor, y: Tensor) -> None:
    """Validate ``x: [B, ...]`` floating and ``y: [B]`` integer labels."""
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating tensor, got {x.dtype}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape [B]={x.shape[0]}, got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"y must hold integer class indices, got {y.dtype}")


def logit_input_grad(model: nn.Module, z: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
    """``∇_z f_y(z)`` for a batch: ``z: [N, C, H, W]``, ``y: [N]`` → ``[N, C, H, W]``.

    If ``z`` already requires grad it is differentiated as is (so the result stays a
    function of whatever ``z`` was computed from); otherwise a detached leaf copy is used.
    Each sample's logit only depends on its own input, so ``∇ Σ_n f_{y_n}(z_n)`` gives all
    per-sample gradients in one backward pass.
    """
    ensure_grad_mode()
    with torch.enable_grad():
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        out = model(z)
        sel = out.gather(1, y.view(-1, 1).long()).sum()
        (g,) = torch.autograd.grad(sel, z, create_graph=create_graph)
    return g


def chunked_rows(fn: Callable[[slice], Tensor], n: int, chunk: int | None) -> Tensor:
    """Concatenate ``fn(rows)`` over row slices of at most ``chunk`` rows (``None``: one call)."""
    if chunk is None or chunk >= n:
        return fn(slice(0, n))
    if chunk < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {chunk}")
    return torch.cat([fn(slice(i, min(i + chunk, n))) for i in range(0, n, chunk)], dim=0)


class Attribution(ABC):
    """Base class: ``__call__(model, x, y, create_graph=False) -> Tensor`` shaped like ``x``.

    Attributes:
        differentiable: whether ``create_graph=True`` yields a result that is part of the
            autograd graph (True unless a subclass says otherwise).
    """

    differentiable: bool = True

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        check_inputs(x, y)
        if create_graph and not self.differentiable:
            raise ValueError(
                f"create_graph=True is not supported by {type(self).__name__}: it is not differentiable "
                "(use it for evaluation, not inside a loss that back-propagates through the attribution)"
            )
        return self.attribute(model, x, y, create_graph=create_graph)

    def with_rows(self, rows: Tensor) -> Attribution:
        """The attribution to apply to a batch whose row ``j`` is original sample ``rows[j]``.

        Wrappers that fold copies of each sample into the batch dimension (noise averaging)
        call this once per chunk, so per-sample state (e.g. an IG baseline with one row per
        sample, ``[B, C, H, W]``) follows its sample. ``rows: [N]`` int64 indices into the
        original batch. The default returns ``self`` (no per-sample state).
        """
        return self

    @abstractmethod
    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        """Compute the attribution; inputs are already validated."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def attribution_map(g: Tensor) -> Tensor:
    """The map used by rank, top-k and LENS metrics: ``a = Σ_c |g_c|``; ``[B, C, H, W] → [B, H, W]``."""
    if g.dim() != 4:
        raise ValueError(f"expected an attribution [B, C, H, W], got shape {tuple(g.shape)}")
    return g.abs().sum(dim=1)
