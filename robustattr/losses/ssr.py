"""SSR: smoothed-geometry (curvature) regularisation (Z. Wang et al., "Smoothed Geometry for Robust Attribution", NeurIPS 2020, arXiv:2006.07828)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.pgd import check_positive
from robustattr.attributions.base import ensure_grad_mode
from robustattr.losses.base import LossOutput, checked_loss
from robustattr.registry import register
from robustattr.utils import contract


def logit_jacobian(model: nn.Module, x: Tensor, num_classes: int, create_graph: bool = False) -> Tensor:
    """Rows ``∇_x f_k(x)`` of the input Jacobian of all K logits: ``[B, C, H, W] → [B, K, d]``.

    The K copies of the batch are folded into one ``[K·B, C, H, W]`` forward (row ``k·B + i``
    selects logit k of sample i) and one backward (K backward passes' worth of work).
    """
    ensure_grad_mode()
    B, K = x.shape[0], num_classes
    with torch.enable_grad():
        z = x.detach().repeat(K, *([1] * (x.dim() - 1))).requires_grad_(True)
        out = model(z).view(K, B, K)
        sel = torch.diagonal(out, dim1=0, dim2=2)  # [B, K]: sel[i, k] = f_k(z_{kB+i})
        (g,) = torch.autograd.grad(sel.sum(), z, create_graph=create_graph)
    return g.view(K, B, -1).transpose(0, 1)


def ce_hessian_lambda_max(jac: Tensor, logits: Tensor) -> Tensor:
    """``λ_max(H̃)`` per sample for ``H̃ = W (diag(p) − ppᵀ) Wᵀ`` (``W = jacᵀ``, d×K): ``[B]``.

    ``A = diag(p) − ppᵀ = L Lᵀ`` with the closed-form factor ``L = diag(√p)(I − √p√pᵀ)``
    (``I − √p√pᵀ`` is a projector since ``‖√p‖ = 1``), so ``λ_max(H̃) = λ_max(Lᵀ (WᵀW) L)``,
    a K×K symmetric eigenproblem. The factor replaces an ``eigh(A)``: same matrix, but
    differentiable when ``p`` has tied entries (``eigh``'s gradient is infinite there, e.g.
    at initialisation). Shapes: ``jac: [B, K, d]``, ``logits: [B, K]``.
    """
    p = F.softmax(logits, dim=1)
    s = p.sqrt()
    eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
    L = s.unsqueeze(2) * (eye - s.unsqueeze(2) * s.unsqueeze(1))  # L_ij = s_i (δ_ij − s_i s_j)
    G = jac @ jac.transpose(1, 2)  # [B, K, K] Gram matrix WᵀW
    M = L.transpose(1, 2) @ G @ L
    M = 0.5 * (M + M.transpose(1, 2))
    return torch.linalg.eigvalsh(M)[:, -1]


@register("loss", "ssr")
class SSRLoss:
    """SSR: ``L = (1−β)·CE(f(x), y) + β·s·mean_i λ_max(H̃(x_i))``.

    ``H̃ = W (diag(p) − ppᵀ) Wᵀ`` is the input Hessian of the CE of a piecewise-linear
    network (exact a.e. for ReLU nets, so the original network is used), ``W ∈ R^{d×K}`` the
    logit Jacobian, ``p = softmax(f(x))``; ``λ_max`` from a K×K matrix
    (:func:`ce_hessian_lambda_max`). Terms: ``ce``, ``lambda_max`` (unscaled mean).

    Cost: one forward+backward on ``K·B`` rows with ``create_graph`` plus its double backward
    (≈ ``2K + 1`` passes of a batch of B).

    Args:
        beta: β ∈ [0, 1] (0.3).
        scale: s > 0 (15 for [0,1] inputs; the reference 1e6 was for 0–255 inputs).
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.
    """

    def __init__(self, beta: float = 0.3, scale: float = 15.0) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        check_positive("scale", scale)
        self.beta, self.scale = beta, scale

    @checked_loss(probe=False)
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        logits = model(x)
        contract.check_logits(logits, x.shape[0], labels=y)
        ce = F.cross_entropy(logits, y)
        jac = logit_jacobian(model, x, logits.shape[1], create_graph=True)
        lam = ce_hessian_lambda_max(jac, logits).mean()
        loss = (1.0 - self.beta) * ce + self.beta * self.scale * lam
        return LossOutput(loss, {"ce": ce.detach(), "lambda_max": lam.detach()}, logits.detach())

    def __repr__(self) -> str:
        return f"SSRLoss(beta={self.beta}, scale={self.scale})"
