"""One name per unit: ``available(kind)`` and ``build(kind, name, **kwargs)``.

Kinds: ``attribution``, ``attack``, ``loss``, ``metric``, ``evaluator``. Each unit registers
itself once, where it is defined, with :func:`register`; the registry imports a kind's
package the first time the kind is queried, so ``import robustattr`` stays light and a new
unit is listed (and picked up by the contract tests parametrised over
``available(kind)``) the moment its module is imported by its package.

Example:
    >>> from robustattr import registry
    >>> "saliency" in registry.available("attribution")
    True
    >>> registry.build("attribution", "integrated_gradients", steps=8).steps
    8
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["KINDS", "available", "build", "get", "name_of", "register"]

#: The registered kinds and the package whose import registers their units.
KINDS: dict[str, str] = {
    "attribution": "robustattr.attributions",
    "attack": "robustattr.attacks",
    "loss": "robustattr.losses",
    "metric": "robustattr.metrics",
    "evaluator": "robustattr.evaluation",
}

_UNITS: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
T = TypeVar("T", bound=Callable[..., Any])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; choose one of {sorted(KINDS)}")


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: register ``cls`` as ``kind``/``name`` (each name once, each class once).

    Raises:
        ValueError: unknown kind, or the name (or the class) is already registered differently.
    """
    _check_kind(kind)

    def deco(cls: T) -> T:
        units = _UNITS[kind]
        if name in units and units[name] is not cls:
            raise ValueError(f"{kind} name {name!r} is already registered to {units[name]!r}")
        for other, unit in units.items():
            if unit is cls and other != name:
                raise ValueError(f"{cls!r} is already registered as {kind} {other!r}")
        units[name] = cls
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _load(kind: str) -> dict[str, Callable[..., Any]]:
    _check_kind(kind)
    importlib.import_module(KINDS[kind])
    return _UNITS[kind]


def available(kind: str) -> list[str]:
    """Sorted names registered for ``kind`` (imports the kind's package first)."""
    return sorted(_load(kind))


def get(kind: str, name: str) -> Callable[..., Any]:
    """The class registered as ``kind``/``name``; ``ValueError`` listing the choices otherwise."""
    units = _load(kind)
    if name not in units:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(sorted(units))}")
    return units[name]


def build(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate the unit registered as ``kind``/``name`` with ``kwargs``."""
    return get(kind, name)(**kwargs)


def name_of(unit: Any) -> str:
    """The registered name of a unit (class or instance); ``ValueError`` if it is not registered."""
    cls = unit if isinstance(unit, type) else type(unit)
    for kind in KINDS:
        for name, registered in _load(kind).items():
            if registered is cls:
                return name
    raise ValueError(f"{cls.__qualname__} is not registered")
