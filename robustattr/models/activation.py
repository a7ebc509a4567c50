"""Activation swap: a smooth surrogate that shares weights with the original network.

ReLU networks have zero second derivatives almost everywhere, so attacks and curvature
quantities run on ``Softplus(beta)`` surrogates (SPEC §0); reported metrics use the original.
"""

from __future__ import annotations

import copy
import weakref

from torch import nn

#: Activation module types that ``replace_activation`` swaps by default.
DEFAULT_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU)


def _is_activation(module: nn.Module, types: tuple[type[nn.Module], ...]) -> bool:
    return isinstance(module, types)


def replace_activation(
    model: nn.Module,
    activation: nn.Module,
    types: tuple[type[nn.Module], ...] = (nn.ReLU,),
) -> nn.Module:
    """Return a copy of ``model`` whose activation modules are replaced by ``activation``.

    The copy **shares** every parameter and buffer with ``model`` (optimizer steps and
    BatchNorm statistics are seen by both); only the module tree is new. Works through
    timm's ``act_layer(inplace=True)`` modules because those are ``nn.ReLU`` instances.
    Activations applied functionally inside ``forward`` (``F.relu``) cannot be swapped; a
    ``ValueError`` is raised when no module of ``types`` is found, so that never goes unnoticed.

    Args:
        model: the original network (unchanged).
        activation: the replacement, e.g. ``nn.Softplus(beta=10)``; deep-copied per site.
        types: module classes to replace (default ``(nn.ReLU,)``).

    Returns:
        The surrogate network, in the same train/eval mode as ``model``.
    """
    memo: dict[int, object] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        memo[id(t)] = t
    surrogate = copy.deepcopy(model, memo)
    n = 0
    for parent in surrogate.modules():
        for name, child in list(parent.named_children()):
            if _is_activation(child, types):
                setattr(parent, name, copy.deepcopy(activation))
                n += 1
    if n == 0:
        raise ValueError(
            f"replace_activation found no {', '.join(t.__name__ for t in types)} module in "
            f"{type(model).__name__}; functional activations cannot be swapped"
        )
    surrogate.train(model.training)
    return surrogate


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[float, nn.Module]] = weakref.WeakKeyDictionary()


def softplus_surrogate(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """Cached ``replace_activation(model, nn.Softplus(beta))`` (built once per model and β).

    The surrogate shares weights, so the cache stays valid across optimizer steps; its
    train/eval mode is synchronised with ``model`` on every call. If ``model`` has no ReLU
    (it is already smooth), ``model`` itself is returned.
    """
    if beta <= 0:
        raise ValueError(f"softplus beta must be > 0, got {beta}")
    per_model = _CACHE.setdefault(model, {})
    sur = per_model.get(beta)
    if sur is None:
        if not any(isinstance(m, nn.ReLU) for m in model.modules()):
            return model
        sur = replace_activation(model, nn.Softplus(beta=beta))
        per_model[beta] = sur
    sur.train(model.training)
    return sur
