"""Shared machinery of differentiable attributions.

Every attribution is called as ``attr(model, x, y, create_graph=False)`` with
``x: [B, C, H, W]`` and ``y: [B]`` (int64 class indices) and returns ``g: [B, C, H, W]``.
With ``create_graph=True`` the result is part of the autograd graph: a loss on it
back-propagates to the model's parameters and, if ``x.requires_grad``, to ``x``.
No attribution mutates ``x``, ``x.grad`` or the model's train/eval mode.

Attributions that cannot build a differentiable graph (e.g. a wrapped Captum method) set
``differentiable = False``; calling them with ``create_graph=True`` raises ``ValueError``, so
a training loss that needs second derivatives refuses them instead of silently getting zeros.

Input contract (:mod:`robustattr.utils.contract`): the outermost call checks once that ``x`` is
finite with pixels in [0, 1], that ``y`` holds classes in ``[0, K)`` (against the model's first
output) and that the model returns ``[B, K]``; the returned attribution must be finite, and rows
computed from non-finite logits are made NaN so that this one check catches them. A violation
raises ``ValueError`` naming the samples. Nested calls (the base of SmoothGrad on noisy copies,
attributions inside attacks) are not re-checked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustattr.utils import contract

_HINT = "(non-finite logits or gradients: does the network overflow?)"


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
    """Validate ``x: [B, C, H, W]`` (floating, finite, in [0, 1]) and ``y: [B]`` (integer, ≥ 0); one synchronisation."""
    contract.check_batch(x, y)


def checked_attribution(
    compute: Callable[[], Tensor], x: Tensor, y: Tensor, model: nn.Module | None = None
) -> Tensor:
    """Run ``compute()`` (an attribution of ``x: [B, C, H, W]`` for ``y: [B]``) as a public entry.

    The outermost call checks ``x`` and ``y`` before, the labels against K at the first model
    output (:func:`logit_input_grad`) and the finiteness of the result after; nested calls run
    ``compute()`` unchecked. With ``model`` (for methods whose model outputs do not pass through
    :func:`logit_input_grad`, e.g. layer or hook-based ones), the outermost call first checks the
    model's output at ``x`` with one extra forward (:func:`robustattr.utils.contract.check_call`).
    """
    with contract.entry(labels=y) as outer:
        if outer:
            if model is not None:
                contract.check_call(model, x, y)
            else:
                check_inputs(x, y)
        g = compute()
        if outer:
            contract.check_finite(g, "attribution", hint=_HINT)
    return g


def logit_input_grad(model: nn.Module, z: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
    """``∇_z f_y(z)`` for a batch: ``z: [N, C, H, W]``, ``y: [N]`` → ``[N, C, H, W]``.

    If ``z`` already requires grad it is differentiated as is (so the result stays a
    function of whatever ``z`` was computed from); otherwise a detached leaf copy is used.
    Each sample's logit only depends on its own input, so ``∇ Σ_n f_{y_n}(z_n)`` gives all
    per-sample gradients in one backward pass.

    The model output must be ``[N, K]`` (``ValueError`` otherwise). Rows whose logits are not
    all finite come back as NaN, so the check at the public entry refuses them; called on its
    own (outside any entry) it checks ``y`` against K and the finiteness of the result itself.
    """
    ensure_grad_mode()
    outer = not contract.inside_entry()
    with torch.enable_grad():
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        out = model(z)
        contract.check_model_output(out, z.shape[0], y)
        sel = out.gather(1, y.view(-1, 1).long()).sum()
        (g,) = torch.autograd.grad(sel, z, create_graph=create_graph)
        g = contract.poison_nonfinite_rows(g, out)
    if outer:
        contract.check_finite(g, "attribution", hint=_HINT)
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
        checks_model_output_at_entry: check the model's output ``[B, K]`` and the labels with
            one extra forward before computing (for methods that do not read the logits
            through :func:`logit_input_grad`).
    """

    differentiable: bool = True
    #: True for methods whose model outputs do not pass through :func:`logit_input_grad` (layer-
    #: or hook-based ones): the outermost call then checks the model's output at x up front.
    checks_model_output_at_entry: bool = False

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False, *, check_range: bool = True) -> Tensor:
        """``g: [B, C, H, W]`` for ``x: [B, C, H, W]`` in [0, 1] and ``y: [B]``; the input contract is checked
        (see the module docstring) and a ``ValueError`` names the offending samples. ``check_range=False``
        lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`)."""
        if create_graph and not self.differentiable:
            raise ValueError(
                f"create_graph=True is not supported by {type(self).__name__}: it is not differentiable "
                "(use it for evaluation, not inside a loss that back-propagates through the attribution)"
            )
        precheck = model if self.checks_model_output_at_entry else None
        with contract.range_option(check_range):
            return checked_attribution(lambda: self.attribute(model, x, y, create_graph=create_graph), x, y, precheck)

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
