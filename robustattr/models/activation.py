"""Activation swap: a smooth surrogate that shares weights with the original network.

ReLU networks have zero second derivatives almost everywhere and max-pooling has an input
gradient that jumps where a window's argmax switches, so attacks, curvature losses and
worst-case bounds run on a surrogate: ReLU → ``Softplus(β)`` and max-pooling → log-mean-exp
pooling with the same β. The softplus swap is that of A.-K. Dombrowski et al., "Explanations
can be manipulated and geometry is to blame", NeurIPS 2019, arXiv:1906.07983, also used by
F. Wang & A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations",
CVPR 2023, arXiv:2303.00340; log-mean-exp pooling applies the same smoothing to max-pooling.
Reported metrics and acceptance checks use the original network.
"""

from __future__ import annotations

import copy
import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Activation module types that ``replace_activation`` swaps by default.
DEFAULT_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU)


class SmoothMaxPool2d(nn.Module):
    """Log-mean-exp pooling, a smooth surrogate of ``nn.MaxPool2d``.

    ``y = (1/β) · log( (1/n) Σ_{i∈window} exp(β x_i) )`` with n = k² window entries, so
    ``max − log(n)/β ≤ y ≤ max`` and ``y → max`` as ``β → ∞``; unlike max-pooling its input
    gradient (a softmax over the window) is continuous, so second-order quantities and
    first-order bounds are meaningful. ``[B, C, H, W] → [B, C, H', W']`` with the same output
    size as the max-pool it replaces (padding uses −∞, i.e. contributes nothing).

    Args:
        kernel_size, stride, padding: as in ``nn.MaxPool2d`` (``dilation=1``, ``ceil_mode=False``).
        beta: sharpness β > 0.
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, beta: float = 10.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.beta = beta

    @classmethod
    def from_maxpool(cls, pool: nn.MaxPool2d, beta: float) -> SmoothMaxPool2d:
        """Same window as ``pool``; refuses the options it cannot reproduce."""
        if pool.dilation not in (1, (1, 1)) or pool.ceil_mode or pool.return_indices:
            raise ValueError("SmoothMaxPool2d supports dilation=1, ceil_mode=False, return_indices=False only")
        return cls(pool.kernel_size, pool.stride, pool.padding, beta)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        k = nn.modules.utils._pair(self.kernel_size)
        s = nn.modules.utils._pair(self.stride)
        p = nn.modules.utils._pair(self.padding)
        if any(p):
            x = F.pad(x, (p[1], p[1], p[0], p[0]), value=-math.inf)
        cols = F.unfold(x.reshape(B * C, 1, x.shape[2], x.shape[3]), k, stride=s)  # [B·C, k², L]
        n = k[0] * k[1]
        y = (torch.logsumexp(self.beta * cols, dim=1) - math.log(n)) / self.beta
        Ho = (H + 2 * p[0] - k[0]) // s[0] + 1
        Wo = (W + 2 * p[1] - k[1]) // s[1] + 1
        return y.view(B, C, Ho, Wo)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, beta={self.beta}"


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


def softplus_surrogate(model: nn.Module, beta: float = 10.0, smooth_pool: bool = True) -> nn.Module:
    """Cached smooth surrogate of ``model`` (built once per model, β and option).

    Every ``nn.ReLU`` becomes ``nn.Softplus(beta)`` and, with ``smooth_pool=True`` (the
    default, used by the attacks, the curvature losses and the bounds), every ``nn.MaxPool2d``
    becomes :class:`SmoothMaxPool2d` with the same β: ``(1/β)·log mean_window exp(β·x)``,
    whose gradient (a softmax over the window) is continuous. ``smooth_pool=False`` keeps
    max-pooling (the surrogate then is not smooth where a window's argmax switches).
    The surrogate shares weights, so the cache stays valid across optimizer steps; its
    train/eval mode is synchronised with ``model`` on every call. If nothing needs replacing,
    ``model`` itself is returned.
    """
    if beta <= 0:
        raise ValueError(f"softplus beta must be > 0, got {beta}")
    per_model = _CACHE.setdefault(model, {})
    key = (beta, smooth_pool)
    sur = per_model.get(key)
    if sur is None:
        has_relu = any(isinstance(m, nn.ReLU) for m in model.modules())
        has_pool = smooth_pool and any(isinstance(m, nn.MaxPool2d) for m in model.modules())
        if not (has_relu or has_pool):
            return model
        sur = replace_activation(model, nn.Softplus(beta=beta)) if has_relu else model
        if has_pool:
            sur = replace_maxpool(sur, beta)
        per_model[key] = sur
    sur.train(model.training)
    return sur


def replace_maxpool(model: nn.Module, beta: float) -> nn.Module:
    """Copy of ``model`` (sharing parameters and buffers) with every ``nn.MaxPool2d`` → :class:`SmoothMaxPool2d` (β).

    The copy keeps ``model``'s train/eval mode; ``model`` is unchanged.
    """
    memo: dict[int, object] = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    out = copy.deepcopy(model, memo)
    for parent in out.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, SmoothMaxPool2d.from_maxpool(child, beta))
    out.train(model.training)
    return out
