"""The input contract of every public entry point: checked once, cheaply, with errors that name samples.

Every public entry of robustattr (attributions, attacks, losses, the certifier, the bounds, the
metrics) takes images ``x: [B, C, H, W]`` and, where a class is explained, labels ``y: [B]``.
The contract is

- ``x`` is a floating tensor, finite, with pixels in ``[0, 1]`` (every budget ε, radius r and
  attack step is defined in these pixel units; per-channel normalisation is the model's first
  layer);
- ``y`` holds integer class indices in ``[0, K)``;
- the model returns logits ``[B, K]``, and they are finite.

A violation raises a one-line ``ValueError`` that names the argument and the offending samples,
e.g. ``x: samples [0, 3] contain NaN/inf``. Non-finite attributions or logits produced inside an
entry (a network that overflows) raise the same way; nothing is averaged away or certified.

Cost: each check is one reduction over the batch and one host synchronisation
(:func:`check_logits` checks logits and labels against K with a single synchronisation); the
per-sample indices are only computed when a check fails. Entry points nest (an attack calls
attributions, SmoothGrad calls its base attribution on noisy copies that leave ``[0, 1]``):
only the outermost entry checks (:func:`entry`), so inner loops never synchronise.

Other pixel conventions (e.g. 0–255 images) are refused by default. To use them, disable the
range check explicitly, for one call with the keyword-only ``check_range=False`` that every public
entry takes (attributions and their ``attribute_with_noise``, attacks, losses, the certifier's
``certify``/``min_radius``, ``top_singular``/``full_jacobian``/``worst_case_bounds``,
``evaluate_bounds``, every evaluator's ``evaluate``, the robustness metrics' ``per_sample``/``update``)::

    g = Saliency()(model, x_0_255, y, check_range=False)

or for a block of code::

    with robustattr.utils.range_check(False):
        g = Saliency()(model, x_0_255, y)

Both are the same switch: the keyword wraps the call in ``range_check(False)``
(:func:`range_option`); ``check_range=True`` (the default) keeps the surrounding setting, so a
call inside ``with range_check(False):`` stays unchecked. Finiteness, shapes and labels are still
checked. The attacks still project onto the ``[0, 1]`` box, and ε, r are in the units of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustattr.utils.modes import eval_mode

__all__ = [
    "check_batch",
    "check_call",
    "check_finite",
    "check_images",
    "check_labels",
    "check_logits",
    "check_model_output",
    "entry",
    "inside_entry",
    "poison_nonfinite_rows",
    "range_check",
    "range_check_enabled",
    "range_option",
]

_RANGE_CHECK: ContextVar[bool] = ContextVar("robustattr_range_check", default=True)
_SHOWN = 10  # sample indices shown in a message
_OVERFLOW_HINT = "(does the network overflow?)"


@contextmanager
def range_check(enabled: bool) -> Iterator[None]:
    """Enable or disable the ``[0, 1]`` pixel-range check inside a ``with`` block (restored on exit).

    The switch for other pixel conventions: ``with range_check(False): ...`` lets images
    outside ``[0, 1]`` into every entry point (an entry's ``check_range=False`` is the same
    switch for one call, see :func:`range_option`); NaN/inf, shapes and labels are still checked. The
    setting is a context variable, so it is local to the thread (and asyncio task) that set it.

    Example:
        >>> import torch
        >>> x = torch.full((1, 1, 2, 2), 255.0)
        >>> with range_check(False):
        ...     check_images(x)
        >>> range_check_enabled()
        True
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"range_check expects True or False, got {enabled!r}")
    token = _RANGE_CHECK.set(enabled)
    try:
        yield
    finally:
        _RANGE_CHECK.reset(token)


def range_option(check_range: bool) -> AbstractContextManager[None]:
    """The context behind a public entry's keyword-only ``check_range`` argument.

    ``check_range=False`` disables the ``[0, 1]`` range check for the call (``range_check(False)``);
    ``True`` leaves the surrounding setting as it is (it never re-enables a check that an
    enclosing ``with range_check(False):`` switched off). Entries use it as
    ``with range_option(check_range): <the checked entry>``.

    Raises:
        ValueError: ``check_range`` is not a bool.

    Example:
        >>> with range_option(False):
        ...     range_check_enabled()
        False
        >>> with range_check(False), range_option(True):
        ...     range_check_enabled()
        False
    """
    if not isinstance(check_range, bool):
        raise ValueError(f"check_range must be True or False, got {check_range!r}")
    return nullcontext() if check_range else range_check(False)


def range_check_enabled() -> bool:
    """Whether the ``[0, 1]`` range of images is checked here (see :func:`range_check`)."""
    return _RANGE_CHECK.get()


# ---------------------------------------------------------------------------- entries
@dataclass
class _Entry:
    labels: Tensor | None  # labels of the outermost entry, checked against K on the first model output
    index: Tensor | None
    batch: int | None  # B of the outermost entry (None if unknown)


_ENTRY: ContextVar[_Entry | None] = ContextVar("robustattr_contract_entry", default=None)


@contextmanager
def entry(labels: Tensor | None = None, index: Tensor | None = None) -> Iterator[bool]:
    """Mark a public entry point; yields ``True`` for the outermost one, which alone checks.

    Nested entries (an attack's attributions, SmoothGrad's base attribution on noisy copies,
    the certifier's noisy evaluations) yield ``False`` and skip their checks, so inner loops
    never synchronise with the device. ``labels: [B]`` of the outermost entry, if given, are
    checked against the number of classes K of the first model output seen inside it
    (:func:`check_model_output`); ``index: [B]`` names samples in those messages.
    """
    if _ENTRY.get() is not None:
        yield False
        return
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        labels = None  # malformed labels are reported by the entry's own check
    token = _ENTRY.set(_Entry(labels, index, None if labels is None else int(labels.shape[0])))
    try:
        yield True
    finally:
        _ENTRY.reset(token)


# ---------------------------------------------------------------------------- messages
def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _samples(bad: Tensor, index: Tensor | None) -> str:
    """``[0, 3]`` (positions, or ``index`` entries) of the True rows of ``bad: [B]``; long lists are cut."""
    which = torch.nonzero(bad.reshape(-1)).flatten()
    names = (index.reshape(-1)[which.to(index.device)] if index is not None else which).tolist()
    shown = ", ".join(str(int(n)) for n in names[:_SHOWN])
    return f"[{shown}, ...] ({len(names)} samples)" if len(names) > _SHOWN else f"[{shown}]"


def _num(v: float) -> str:
    return f"{v:.6g}"


def _check_tensor(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


# ---------------------------------------------------------------------------- images
def _image_structure(x: Tensor, name: str, ndim: int | None) -> None:
    _check_tensor(x, name)
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating tensor of pixels in [0, 1], got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        want = "[B, C, H, W]" if ndim == 4 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {want}, got {_shape(x)}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension, got a scalar")


def _image_summary(x: Tensor) -> Tensor:
    """``[2]`` float64: smallest and largest pixel of the batch (NaN if any pixel is NaN)."""
    if x.numel() == 0:
        return torch.zeros(2, dtype=torch.float64, device=x.device)
    lo, hi = torch.aminmax(x.detach().reshape(1, -1), dim=1)
    return torch.cat([lo, hi]).to(torch.float64)


def _image_message(x: Tensor, name: str, check_range: bool, index: Tensor | None) -> str | None:
    """The error for a batch whose summary looked wrong (slow path), or None."""
    flat = x.detach().reshape(x.shape[0], -1)
    lo, hi = torch.aminmax(flat, dim=1)
    nonfinite = ~(torch.isfinite(lo) & torch.isfinite(hi))
    if bool(nonfinite.any()):
        return f"{name}: samples {_samples(nonfinite, index)} contain NaN/inf"
    outside = (lo < 0) | (hi > 1)
    if check_range and bool(outside.any()):
        return (
            f"{name}: samples {_samples(outside, index)} lie outside [0, 1] "
            f"(min {_num(float(lo.min()))}, max {_num(float(hi.max()))}); "
            "for other pixel conventions pass check_range=False or wrap the call in "
            "`with robustattr.utils.range_check(False):`"
        )
    return None


def check_images(
    x: Tensor, name: str = "x", check_range: bool = True, ndim: int | None = 4, index: Tensor | None = None
) -> None:
    """Images ``x: [B, C, H, W]``: floating, finite and (unless disabled) in ``[0, 1]``.

    Args:
        x: the images.
        name: the argument named in the message.
        check_range: check the ``[0, 1]`` range (also disabled inside ``range_check(False)``).
        ndim: required number of dimensions (4; ``None``: any, with a leading batch dimension).
        index: ``[B]`` dataset indices used to name samples (default: positions in the batch).

    Raises:
        ValueError: e.g. ``x: samples [0, 3] contain NaN/inf`` or
            ``x: samples [2] lie outside [0, 1] (min -0.2, max 255); ...``.
    """
    _image_structure(x, name, ndim)
    check_range = check_range and range_check_enabled()
    lo, hi = _image_summary(x).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)) or (check_range and (lo < 0 or hi > 1)):
        msg = _image_message(x, name, check_range, index)
        if msg is not None:
            raise ValueError(msg)


# ---------------------------------------------------------------------------- labels
def _label_structure(y: Tensor, batch_size: int, name: str) -> None:
    _check_tensor(y, name)
    if torch.is_floating_point(y) or torch.is_complex(y) or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != batch_size:
        raise ValueError(f"{name} must have shape [B] = [{batch_size}], got {_shape(y)}")


def _label_summary(y: Tensor) -> Tensor:
    if y.numel() == 0:
        return torch.zeros(2, dtype=torch.float64, device=y.device)
    lo, hi = torch.aminmax(y.detach())
    return torch.stack([lo, hi]).to(torch.float64)


def _label_message(y: Tensor, num_classes: int | None, name: str, index: Tensor | None) -> str | None:
    bad = y < 0 if num_classes is None else (y < 0) | (y >= num_classes)
    if not bool(bad.any()):
        return None
    classes = sorted({int(c) for c in y[bad].tolist()})
    what = f"class {classes[0]}" if len(classes) == 1 else f"classes {classes[:_SHOWN]}"
    upper = "K" if num_classes is None else str(num_classes)
    return f"{name}: samples {_samples(bad, index)} have {what} outside [0, {upper})"


def check_labels(
    y: Tensor, batch_size: int, num_classes: int | None = None, name: str = "y", index: Tensor | None = None
) -> None:
    """Labels ``y: [B]``: integer class indices in ``[0, num_classes)`` (only ``≥ 0`` if K is unknown).

    Raises:
        ValueError: e.g. ``y: samples [1] have class 12 outside [0, 10)``.
    """
    _label_structure(y, batch_size, name)
    lo, hi = _label_summary(y).tolist()
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        msg = _label_message(y, num_classes, name, index)
        if msg is not None:
            raise ValueError(msg)


# ---------------------------------------------------------------------------- logits
def _logit_structure(logits: Tensor, batch_size: int, name: str) -> int:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a tensor of logits [B, K], got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != batch_size:
        raise ValueError(f"{name} has shape {_shape(logits)}, expected [B, K] = [{batch_size}, K]")
    if logits.shape[1] < 1:
        raise ValueError(f"{name} has no logits (shape {_shape(logits)})")
    return int(logits.shape[1])


def _finite_summary(t: Tensor) -> Tensor:
    """``[1]`` float64, non-finite iff some entry of ``t`` is NaN/inf (or the float64 sum overflows)."""
    if t.numel() == 0:
        return torch.zeros(1, dtype=torch.float64, device=t.device)
    return t.detach().sum(dtype=torch.float64).reshape(1)


def _finite_message(t: Tensor, what: str, index: Tensor | None, verb: str, hint: str) -> str | None:
    bad = ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(dim=1)
    if not bool(bad.any()):
        return None
    return f"{what} {verb} NaN/inf for samples {_samples(bad, index)} {hint}".rstrip()


def check_logits(
    logits: Tensor, batch_size: int, labels: Tensor | None = None, name: str = "model output", index: Tensor | None = None
) -> int:
    """Model output ``[B, K]`` with finite entries (and ``labels: [B]`` in ``[0, K)``); returns K.

    One synchronisation for both checks.

    Raises:
        ValueError: ``model output has shape [8], expected [B, K] = [8, K]``,
            ``y: samples [1] have class 12 outside [0, 10)`` or
            ``model output is NaN/inf for samples [3] (does the network overflow?)``.
    """
    K = _logit_structure(logits, batch_size, name)
    if labels is not None:
        _label_structure(labels, batch_size, "y")
    parts = [_finite_summary(logits)] + ([_label_summary(labels).to(logits.device)] if labels is not None else [])
    vals = torch.cat(parts).tolist()
    if labels is not None and (vals[1] < 0 or vals[2] >= K):
        msg = _label_message(labels, K, "y", index)
        if msg is not None:
            raise ValueError(msg)
    if not math.isfinite(vals[0]):
        msg = _finite_message(logits, name, index, "is", _OVERFLOW_HINT)
        if msg is not None:
            raise ValueError(msg)
    return K


def check_finite(t: Tensor, what: str, index: Tensor | None = None, hint: str = _OVERFLOW_HINT) -> None:
    """A tensor ``[B, ...]`` produced inside an entry (an attribution, logits) must be finite.

    Raises:
        ValueError: e.g. ``attribution is NaN/inf for samples [0, 2] (does the network overflow?)``.
    """
    if t.dim() == 0:
        t = t.reshape(1)
    if not torch.isfinite(_finite_summary(t)).all():
        msg = _finite_message(t, what, index, "is", hint)
        if msg is not None:
            raise ValueError(msg)


# ---------------------------------------------------------------------------- combined
def check_batch(
    x: Tensor, y: Tensor | None = None, *, check_range: bool = True, index: Tensor | None = None, x_name: str = "x"
) -> None:
    """:func:`check_images` on ``x: [B, C, H, W]`` and, if given, the structure of ``y`` (integer ``[B]``).

    The label values are checked against K with the model output (:func:`check_logits` with
    ``labels``, or :func:`entry` with ``labels`` and :func:`check_model_output`), so that every
    message about a class names the range ``[0, K)``.
    """
    check_images(x, x_name, check_range=check_range, index=index)
    if y is not None:
        _label_structure(y, x.shape[0], "y")


def check_call(model: nn.Module, x: Tensor, y: Tensor | None = None, index: Tensor | None = None) -> Tensor:
    """The whole contract of a call ``f(model, x, y)``: :func:`check_batch`, then the model output at ``x``.

    The output is computed once without gradients in eval mode (every submodule's mode is
    restored, so BatchNorm statistics are not touched) and must be ``[B, K]`` and finite, with
    ``y`` in ``[0, K)``. Two synchronisations. Returns the detached logits ``[B, K]`` (e.g. for
    the predicted class). Meant for entries whose own work costs many forward passes (attacks,
    the certifier, the bounds, robust losses).
    """
    check_batch(x, y, index=index)
    with torch.no_grad(), eval_mode(model):
        logits = model(x)
    check_logits(logits, x.shape[0], labels=y, index=index)
    return logits


def inside_entry() -> bool:
    """Whether the caller runs inside a public entry (whose outermost call checks the contract)."""
    return _ENTRY.get() is not None


def check_model_output(out: Tensor, rows: int, y: Tensor | None = None) -> int:
    """Every model output consumed inside the library: shape ``[rows, K]`` (no synchronisation).

    Inside an :func:`entry` created with ``labels``, the first output seen checks those labels
    against K (one synchronisation per entry). Outside any entry, ``y`` (if given) is checked
    against K directly. Returns K.
    """
    state = _ENTRY.get()
    try:
        K = _logit_structure(out, rows, "model output")
    except ValueError as err:
        if state is not None and state.batch is not None and state.batch != rows:
            raise ValueError(f"{err} (the {state.batch} samples folded into {rows} rows)") from None
        raise
    if state is None:
        if y is not None:
            check_labels(y, rows, K)
    elif state.labels is not None:
        labels, state.labels = state.labels, None
        check_labels(labels, labels.shape[0], K, index=state.index)
    return K


def poison_nonfinite_rows(t: Tensor, logits: Tensor) -> Tensor:
    """``t: [N, ...]`` with rows whose ``logits: [N, K]`` are not all finite set to NaN (no synchronisation).

    An attribution computed from NaN/inf logits can still be finite (e.g. a NaN bias leaves the
    input gradient finite); poisoning its rows lets the single check at the entry catch it.
    Differentiable (``torch.where``).
    """
    ok = torch.isfinite(logits.detach()).all(dim=1).view(-1, *([1] * (t.dim() - 1)))
    return torch.where(ok, t, torch.full_like(t, float("nan")))
