"""The contract of every robust objective: ``loss(model, x, y, *, check_range=True) -> LossOutput``.

Every loss checks its input once per call (:func:`checked_loss`): ``x: [B, C, H, W]`` finite
with pixels in [0, 1] (``check_range=False``: any range), ``y: [B]`` classes in ``[0, K)``, model
output ``[B, K]`` and finite. A violation raises ``ValueError`` naming the samples, before any
inner maximisation runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from robustattr.utils import contract
from robustattr.utils.modes import eval_mode


class LossOutput(NamedTuple):
    """What a robust objective returns.

    Attributes:
        loss: scalar to back-propagate (one ordinary ``backward``; DDP-safe).
        terms: detached scalars for logging as ``train/<name>`` (e.g. ``{"ce": …, "kl": …}``).
        logits: clean logits ``[B, K]`` if the objective computed them (used for train
            accuracy without an extra forward), else ``None``.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    logits: Tensor | None = None


@runtime_checkable
class RobustLoss(Protocol):
    """``__call__(model, x, y, *, check_range=True) -> LossOutput``; ``x: [B, C, H, W]`` in [0,1], ``y: [B]``."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, check_range: bool = True) -> LossOutput: ...


_Call = TypeVar("_Call", bound=Callable[..., Any])


def probe_logits(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The contract probe as a value: eval-mode logits ``f(x)`` without gradients, checked; ``[B, K]``.

    For objectives declared with ``checked_loss(probe=False)`` whose inner maximisation needs
    exactly these logits (TRADES' ``p(x)``, Zhang et al., ICML 2019, arXiv:1901.08573): one
    forward serves both the check (finite ``[B, K]``, ``y`` in ``[0, K)``) and the ascent.
    Every submodule's mode is restored, so BatchNorm statistics are untouched.
    Shapes: ``x: [B, C, H, W]``, ``y: [B]`` → detached ``[B, K]``.
    """
    with torch.no_grad(), eval_mode(model):
        logits = model(x)
    contract.check_logits(logits, x.shape[0], labels=y)
    return logits


def checked_loss(probe: bool = True) -> Callable[[_Call], _Call]:
    """Decorator of a loss's ``__call__(self, model, x, y)``: the input contract, checked once per call.

    With ``probe=True`` the model output at ``x`` is checked by one extra forward without
    gradients in eval mode (:func:`robustattr.utils.contract.check_call`; cheap next to an inner
    maximisation, and BatchNorm statistics are untouched). With ``probe=False`` only ``x`` and
    ``y`` are checked here and the loss checks the logits it computes itself with
    ``contract.check_logits(logits, B, labels=y)`` (or :func:`probe_logits`) before using
    ``y``. The call is an entry
    point (:func:`robustattr.utils.contract.entry`): the attacks and attributions it runs inside
    are not re-checked. The decorated call takes a keyword-only ``check_range: bool = True``;
    ``False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
    """

    def deco(call: _Call) -> _Call:
        @functools.wraps(call)
        def wrapper(self: Any, model: nn.Module, x: Tensor, y: Tensor, *, check_range: bool = True) -> Any:
            with contract.range_option(check_range), contract.entry() as outer:
                if outer:
                    if probe:
                        contract.check_call(model, x, y)
                    else:
                        contract.check_batch(x, y)
                return call(self, model, x, y)

        sig = inspect.signature(call)
        keyword = inspect.Parameter("check_range", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool)
        wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), keyword])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
