"""The evaluator contract shared by the callbacks, ``certify.py`` and the study.

An :class:`Evaluator` turns a batch into **per-sample** results and a set of per-sample
results into a **summary**:

- :meth:`Evaluator.evaluate` ``(model, x [b, C, H, W], y [b], index [b], *, check_range=True)
  -> {column: Tensor [b]}``, one flat ``[b]`` tensor per column (float, bool or int; NaN where a
  value does not exist, e.g. "not certified"). ``index`` holds dataset indices: every random
  stream of sample i is seeded from ``seed + index_i``, so results do not depend on batching or
  on how samples are spread over processes. The batch must satisfy the input contract
  (:mod:`robustattr.utils.contract`); ``check_range=False`` lets pixels outside [0, 1] through.
- :meth:`Evaluator.summarize` ``({column: Tensor [N]}) -> {key: float}`` over all samples.
- :meth:`Evaluator.columns` names the per-sample columns before anything runs (run stores
  write them as a header); :meth:`Evaluator.params` lists every parameter that changes a
  result (a run's identity).

Evaluation runs the model in eval mode and restores every submodule's mode afterwards.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["Evaluator", "describe"]


def describe(obj: Any) -> Any:
    """A JSON-serialisable description of ``obj`` for run identities.

    Scalars, strings and ``None`` as is (non-finite floats as strings); sequences and mappings
    element-wise; tensors as nested lists; any other object as ``{"class": module.qualname,
    **public attributes described recursively}``, public attributes including values kept by data
    descriptors of the class (such as a validated, settable ``eps``).
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, Tensor):
        return describe(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        return {str(k): describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return describe(obj.tolist())
    if isinstance(obj, nn.Module):
        return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    out: dict[str, Any] = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    items = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
    for key in dir(type(obj)):  # settable parameters kept by data descriptors (e.g. a validated eps)
        attr = inspect.getattr_static(type(obj), key)
        if not key.startswith("_") and hasattr(attr, "__get__") and hasattr(attr, "__set__") and not isinstance(attr, property):
            items[key] = getattr(obj, key)
    for key, value in sorted(items.items()):
        if key.startswith("_") or isinstance(value, nn.Module) or callable(value) and not hasattr(value, "__dict__"):
            continue
        out[key] = describe(value)
    return out


class Evaluator(ABC):
    """Per-sample evaluation of a classifier on a batch; see the module docstring.

    Subclasses set ``name`` (their registry name and the default key prefix) and implement
    :meth:`evaluate`, :meth:`summarize` and :meth:`columns`.
    """

    name: str = "evaluator"

    @abstractmethod
    def columns(self, num_classes: int | None = None) -> list[str]:
        """Names of the per-sample columns :meth:`evaluate` returns, in order."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Per-sample results ``{column: [b]}`` for ``x: [b, C, H, W]`` in [0, 1], labels ``y: [b]``.

        Implementations run their whole work inside ``with contract.range_option(check_range):``
        (``check_range=False`` lets pixels outside [0, 1] through).
        """

    @abstractmethod
    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """Scalars from the per-sample results of all samples (``{column: [N]}``)."""

    def params(self) -> dict[str, Any]:
        """Every parameter that changes a result (JSON-serialisable); part of a run's identity."""
        return describe(self)  # type: ignore[no-any-return]

    def warnings(self, input_shape: Sequence[int]) -> list[str]:
        """Settings that cannot produce a meaningful result for inputs of ``input_shape`` (``(C, H, W)``).

        Applications print these before the work starts. Default: none.
        """
        return []

    def cost(self) -> float:
        """Relative cost of one sample (used to balance work across processes). Default 1."""
        return 1.0
