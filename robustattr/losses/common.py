"""Pieces shared by the robust objectives: TRADES' KL and its inner maximisation, the loss-IG
``IGᴸ`` of Chen et al. (2019), the label-logit IG and the cosine gap of IGR.

Every function here is batched over ``[B, C, H, W]`` and differentiable when asked
(``create_graph=True``); per-sample values are returned as ``[B]`` so that callers average
them (robustattr convention: every loss term is a per-sample mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.pgd import (
    PositiveParameter,
    check_count,
    check_norm,
    check_positive,
    draw_noise,
    projected_ascent,
)
from robustattr.attributions.base import ensure_grad_mode
from robustattr.attributions.integrated_gradients import IntegratedGradients
from robustattr.utils.modes import eval_mode


def kl_per_sample(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """``KL(p ‖ q)`` per sample with ``p = softmax(logits_p)``, ``q = softmax(logits_q)``: ``[B, K] → [B]``.

    ``Σ_k p_k (log p_k − log q_k)``; its batch mean equals ``F.kl_div(log q, p, reduction="batchmean")``.
    """
    logp = F.log_softmax(logits_p, dim=1)
    logq = F.log_softmax(logits_q, dim=1)
    return (logp.exp() * (logp - logq)).sum(dim=1)


class TradesInner:
    """TRADES inner maximisation (Zhang et al. 2019): ``x' = argmax_{x' ∈ B_p(x,ε) ∩ [0,1]} KL(p(x) ‖ p(x'))``.

    Starts at ``x + σ·N(0, I)`` (σ = 0.001), ``steps`` sign (ℓ∞) or normalised (ℓ2) steps of
    size α, model in eval mode (mode restored), ``p(x)`` fixed (detached) during the ascent,
    result detached. Cost: ``steps`` forward+backward passes plus one clean forward (none if
    the caller passes the clean logits it already computed).
    ``eps`` and ``step_size`` stay settable after construction (validated ``> 0``).
    """

    eps = PositiveParameter()
    step_size = PositiveParameter()

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        norm: str = "linf",
        start_sigma: float = 0.001,
        noise_seed: int | None = None,
    ) -> None:
        check_count("steps", steps)
        check_norm(norm)
        check_positive("start_sigma", start_sigma)
        self.eps, self.step_size, self.steps, self.norm = eps, step_size, steps, norm
        self.start_sigma, self.noise_seed = start_sigma, noise_seed

    def __call__(self, model: nn.Module, x: Tensor, clean: Tensor | None = None) -> Tensor:
        """``x: [B, C, H, W]`` → adversarial ``x': [B, C, H, W]`` (detached).

        ``clean``: the eval-mode logits ``f(x)`` ``[B, K]`` if the caller already has them (e.g.
        from the contract probe, :func:`robustattr.losses.base.probe_logits`); else computed here.
        """
        ensure_grad_mode()
        with eval_mode(model):
            if clean is None:
                with torch.no_grad():
                    clean = model(x)
            clean = clean.detach()
            start = x.detach() + draw_noise(x, "gaussian", self.start_sigma, self.noise_seed)
            return projected_ascent(
                lambda z: kl_per_sample(clean, model(z)), x, start, self.eps, self.step_size, self.steps, self.norm
            )


def ig_nodes(steps: int, approx: int = 1) -> list[int]:
    """Indices ``k`` of the right-Riemann nodes ``k/m`` kept: every ``approx``-th of ``1..m``.

    ``approx=1`` → all ``m`` nodes; ``m=50, approx=5`` → ``k = 5, 10, …, 50`` (10 nodes).
    """
    check_count("ig_steps", steps)
    check_count("approx", approx)
    if steps % approx:
        raise ValueError(f"ig_steps ({steps}) must be a multiple of approx ({approx})")
    return list(range(approx, steps + 1, approx))


def loss_ig(
    model: nn.Module, x: Tensor, x_prime: Tensor, y: Tensor, steps: int = 50, approx: int = 1, create_graph: bool = False
) -> Tensor:
    """Loss-IG of Chen et al. (2019): ``IGᴸ(x, x') = (x'−x) ⊙ mean_{k∈S} ∇_z CE(f(z_k), y)``, ``z_k = x + (k/m)(x'−x)``.

    ``S`` = every ``approx``-th right-Riemann node (:func:`ig_nodes`). The |S| path points are
    folded into the batch (``[|S|·B, C, H, W]``, one forward and one backward). Differentiable
    w.r.t. ``x``/``x'`` (if they require grad) and the parameters when ``create_graph=True``.
    Shapes: ``x, x': [B, C, H, W]``, ``y: [B]`` → ``[B, C, H, W]``.
    """
    ensure_grad_mode()
    nodes = ig_nodes(steps, approx)
    n, B = len(nodes), x.shape[0]
    alphas = torch.tensor([k / steps for k in nodes], dtype=x.dtype, device=x.device).view(n, *([1] * x.dim()))
    diff = x_prime - x
    with torch.enable_grad():
        z = (x.unsqueeze(0) + alphas * diff.unsqueeze(0)).reshape(n * B, *x.shape[1:])
        if not z.requires_grad:
            z = z.requires_grad_(True)
        ce = F.cross_entropy(model(z), y.repeat(n), reduction="sum")  # Σ of per-sample CEs
        (g,) = torch.autograd.grad(ce, z, create_graph=create_graph)
    return diff * g.view(n, B, *x.shape[1:]).mean(dim=0)


def l1_per_sample(t: Tensor) -> Tensor:
    """``‖t_i‖₁`` per sample: ``[B, ...] → [B]``."""
    return t.flatten(1).abs().sum(dim=1)


def label_ig(model: nn.Module, x: Tensor, y: Tensor, steps: int, create_graph: bool) -> Tensor:
    """IG of the label logit, zero baseline, right Riemann with ``steps`` points (Sundararajan et al., ICML 2017, arXiv:1703.01365); ``[B,C,H,W]``."""
    return IntegratedGradients(steps=steps).attribute(model, x, y, create_graph=create_graph)


def cosine_gap(a: Tensor, b: Tensor) -> Tensor:
    """``1 − cos(a_i, b_i)`` per sample on flattened vectors: ``[B, ...] → [B]`` (ε = 1e-12 in the norms)."""
    return 1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)
