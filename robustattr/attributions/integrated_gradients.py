"""Integrated Gradients (Sundararajan et al. 2017), batched and differentiable."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, chunked_rows, logit_input_grad
from robustattr.registry import register

_METHODS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def path_alphas_weights(steps: int, method: str, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Quadrature nodes ``α_k ∈ [0,1]`` and weights ``w_k`` (Σ w_k = 1) of the path integral.

    ``riemann_right``: ``α_k = k/m``, ``w_k = 1/m`` (k = 1..m), robustattr's default.
    ``riemann_left``: ``α_k = (k-1)/m``; ``riemann_middle``: ``(k-½)/m``.
    ``riemann_trapezoid``: ``α_k = (k-1)/(m-1)``, weights ``1/(m-1)`` with halves at both ends.
    ``gausslegendre``: the m-point Gauss–Legendre rule mapped from [−1, 1] to [0, 1],
    ``α_k = (1 + t_k)/2``, ``w_k = v_k/2`` with ``(t_k, v_k)`` from
    ``numpy.polynomial.legendre.leggauss(m)`` (exact for polynomials of degree ≤ 2m−1; Captum's
    default rule).
    The nodes are Captum's; so are the weights except for the trapezoid, where Captum uses
    step ``1/m`` with halved ends (weights summing to ``(m-1)/m``, so its IG is ``(m-1)/m``
    times this one and loses completeness).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    m = steps
    k = torch.arange(m, dtype=torch.float64, device=device)
    if method == "riemann_right":
        a, w = (k + 1) / m, torch.full((m,), 1.0 / m, dtype=torch.float64, device=device)
    elif method == "riemann_left":
        a, w = k / m, torch.full((m,), 1.0 / m, dtype=torch.float64, device=device)
    elif method == "riemann_middle":
        a, w = (k + 0.5) / m, torch.full((m,), 1.0 / m, dtype=torch.float64, device=device)
    elif method == "riemann_trapezoid":
        if m < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2")
        a = k / (m - 1)
        w = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64, device=device)
        w[0] = w[-1] = 0.5 / (m - 1)
    elif method == "gausslegendre":
        t, v = np.polynomial.legendre.leggauss(m)
        a = torch.as_tensor(0.5 * (1.0 + t), dtype=torch.float64, device=device)
        w = torch.as_tensor(0.5 * v, dtype=torch.float64, device=device)
    else:
        raise ValueError(f"unknown IG method {method!r}; choose one of {_METHODS}")
    return a, w


@register("attribution", "integrated_gradients")
class IntegratedGradients(Attribution):
    """``IG(x) = (x − b) ⊙ Σ_k w_k ∇f_y(b + α_k (x − b))``; ``[B,C,H,W] → [B,C,H,W]``.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017
    (arXiv:1703.01365). With the default right Riemann rule ``w_k = 1/m``, ``α_k = k/m``;
    ``method="gausslegendre"`` uses Gauss–Legendre nodes and weights (see
    :func:`path_alphas_weights`). Completeness: ``Σ IG ≈ f_y(x) − f_y(b)``. The ``m`` path points are folded into the
    batch dimension (``[m·B, C, H, W]``) and evaluated ``internal_batch_size`` rows at a
    time; with ``create_graph=True`` the result is differentiable w.r.t. parameters and x.

    Args:
        steps: m, the number of path points (default 50).
        baseline: ``b`` — a float (constant image), a tensor broadcastable to one sample
            (``[C, H, W]`` or ``[1, C, H, W]``), or one baseline per sample ``[B, C, H, W]``.
            A per-sample baseline also works inside the smoothing wrappers (SmoothGrad,
            UniformSmoothed, VarGrad, SmoothGradSquared): each noisy copy of sample i uses
            baseline row i (see :meth:`with_rows`).
        method: ``riemann_right`` (default), ``riemann_left``, ``riemann_middle``,
            ``riemann_trapezoid`` or ``gausslegendre``.
        internal_batch_size: rows per forward/backward chunk (``None``: all ``m·B`` at once).
    """

    def __init__(
        self,
        steps: int = 50,
        baseline: float | Tensor = 0.0,
        method: str = "riemann_right",
        internal_batch_size: int | None = None,
    ) -> None:
        path_alphas_weights(steps, method)  # validates steps and method
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
        self.steps = steps
        self.baseline = baseline
        self.method = method
        self.internal_batch_size = internal_batch_size

    def _per_sample_baseline(self) -> bool:
        b = self.baseline
        return isinstance(b, Tensor) and b.dim() >= 4 and b.shape[0] > 1

    def with_rows(self, rows: Tensor) -> IntegratedGradients:
        """A copy whose per-sample baseline is ``baseline[rows]`` (``self`` for a shared baseline)."""
        if not self._per_sample_baseline():
            return self
        out = copy.copy(self)
        out.baseline = self.baseline[rows.to(self.baseline.device)]  # type: ignore[index]
        return out

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        b = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
        if self._per_sample_baseline() and b.shape[0] != x.shape[0]:
            raise ValueError(
                f"baseline has {b.shape[0]} rows (one per sample) but x has {x.shape[0]} samples"
            )
        try:
            b = b.expand_as(x)
        except RuntimeError as err:
            raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to x {tuple(x.shape)}") from err
        alphas, weights = path_alphas_weights(self.steps, self.method, x.device)
        alphas, weights = alphas.to(x.dtype), weights.to(x.dtype)
        B, m = x.shape[0], self.steps
        diff = x - b
        # Row n = k·B + i holds path point k of sample i.
        shape = (m,) + (1,) * x.dim()
        z = (b.unsqueeze(0) + alphas.view(shape) * diff.unsqueeze(0)).reshape(m * B, *x.shape[1:])
        yy = y.repeat(m)
        grads = chunked_rows(
            lambda s: logit_input_grad(model, z[s], yy[s], create_graph), m * B, self.internal_batch_size
        )
        avg = (grads.view(m, B, *x.shape[1:]) * weights.view(shape)).sum(dim=0)
        return diff * avg
