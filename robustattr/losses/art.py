"""ART: attributional robustness training (Singh et al. 2020) with a hard-mined triplet loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attacks.pgd import (
    PositiveParameter,
    check_count,
    check_nonnegative,
    check_positive,
    draw_noise,
    projected_ascent,
)
from robustattr.attributions.base import ensure_grad_mode
from robustattr.losses.base import LossOutput, checked_loss
from robustattr.models.activation import softplus_surrogate
from robustattr.registry import register
from robustattr.utils.modes import eval_mode


def pos_neg_gradients(model: nn.Module, X: Tensor, y: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Positive ``∇_X f_y(X)``, negative ``∇_X max_{c≠y} f_c(X)`` and the logits ``f(X)``.

    One forward of ``[X; X]`` (``[2N, C, H, W]``) and one backward give both gradients
    (each row's selected logit depends only on that row). If ``X`` requires grad the results
    stay functions of ``X``. Shapes: ``X: [N, C, H, W]``, ``y: [N]`` → ``[N, C, H, W]`` ×2, ``[N, K]``.
    """
    ensure_grad_mode()
    N = X.shape[0]
    with torch.enable_grad():
        Z = torch.cat([X, X], dim=0)
        if not Z.requires_grad:
            Z = Z.requires_grad_(True)
        out = model(Z)
        yy = y.view(-1, 1)
        pos = out[:N].gather(1, yy)
        other = out[N:].scatter(1, yy, float("-inf")).amax(dim=1)
        (g,) = torch.autograd.grad(pos.sum() + other.sum(), Z, create_graph=create_graph)
    return g[:N], g[N:], out[:N]


def triplet_per_sample(
    x_c: Tensor, x_a: Tensor, pos_c: Tensor, pos_a: Tensor, neg_c: Tensor, neg_a: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Hard-mined triplet of ART per sample ``i`` over the pair ``{clean_i, adv_i}``: ``[B]``.

    For each anchor ``X ∈ {x_c, x_a}``: ``d_ap = max_{j∈pair} 1 − cos(X, pos_j)``,
    ``d_an = min_{j∈pair} 1 − cos(X, neg_j)``, loss ``softplus(d_ap − d_an)``; the value of
    sample i is the mean over its two anchors, so ``mean_i`` equals the mean over the ``2B``
    anchors of ART (Singh et al., ECCV 2020, arXiv:1911.13073). ``mask`` (``[B, C, H, W]`` 0/1) restricts every vector to the
    selected pixels (the inner attack's top-k). All inputs ``[B, C, H, W]``.
    """

    def flat(t: Tensor) -> Tensor:
        return (t * mask if mask is not None else t).flatten(1)

    xs, ps, ns = [flat(x_c), flat(x_a)], [flat(pos_c), flat(pos_a)], [flat(neg_c), flat(neg_a)]
    per_anchor = []
    for anchor in xs:
        cos_p = torch.stack([F.cosine_similarity(anchor, p, dim=1, eps=1e-12) for p in ps], dim=1)
        cos_n = torch.stack([F.cosine_similarity(anchor, n, dim=1, eps=1e-12) for n in ns], dim=1)
        d_ap = (1.0 - cos_p).amax(dim=1)
        d_an = (1.0 - cos_n).amin(dim=1)
        per_anchor.append(F.softplus(d_ap - d_an))
    return 0.5 * (per_anchor[0] + per_anchor[1])


def top_k_pixel_mask(g: Tensor, k: int) -> Tensor:
    """0/1 mask ``[B, C, H, W]`` of the ``k`` pixels (H×W locations, all channels) with the largest ``Σ_c |g_c|``."""
    a = g.detach().abs().sum(dim=1).flatten(1)  # [B, H·W]
    k = min(k, a.shape[1])
    idx = a.topk(k, dim=1).indices
    m = torch.zeros_like(a).scatter_(1, idx, 1.0).view(g.shape[0], 1, *g.shape[2:])
    return m.expand_as(g).to(g.dtype)


@register("loss", "art")
class ARTLoss:
    """ART (Singh et al. 2020): ``L = CE(f(x_adv), y) + w · L_triplet`` on ``X = [x; x_adv]``.

    Anchor ``X_i``, positive ``∇_X f_y(X)``, negative ``∇_X max_{c≠y} f_c(X)`` (both with
    ``create_graph=True``), ``D_p = 1 − cos(X_i, pos_j)``, ``D_n = 1 − cos(X_i, neg_j)``, hard
    mining over ``j ∈ {clean_i, adv_i}`` (:func:`triplet_per_sample`),
    ``L_triplet = mean softplus(d_ap − d_an)``. ``x_adv``: ``steps`` sign steps of ``step_size``
    in the ℓ∞ ball of radius ``eps`` maximising the same per-sample triplet loss restricted to
    the ``top_k`` pixels of the clean saliency, on the softplus surrogate (β = ``softplus_beta``),
    eval mode. The outer CE reuses the logits of the triplet's forward (no extra pass).
    Terms: ``ce`` (on ``x_adv``), ``triplet``.

    Cost: inner ``1 + 2·steps`` passes on ``2B`` rows (clean gradients once, then one double
    backward per step); outer one double backward on ``4B`` rows.

    Args:
        triplet_weight: w ≥ 0 (0.5).
        eps: ε (8/255). step_size: α (5/255). steps: inner steps (3).
        top_k: pixels kept by the inner objective (1000; capped at H·W).
        softplus_beta: surrogate β for the inner attack (50).
        random_start: start the inner attack uniformly in the ball (default: at ``x``).
        noise_seed: ``None`` or a seed for batch-independent per-sample random starts.
    Shapes: ``x: [B, C, H, W]`` in [0,1], ``y: [B]``.

    ``eps`` and ``step_size`` stay settable after construction (validated ``> 0``), e.g. by
    :class:`robustattr.lightning.BudgetWarmup`.
    """

    eps = PositiveParameter()
    step_size = PositiveParameter()

    def __init__(
        self,
        triplet_weight: float = 0.5,
        eps: float = 8 / 255,
        step_size: float = 5 / 255,
        steps: int = 3,
        top_k: int = 1000,
        softplus_beta: float = 50.0,
        random_start: bool = False,
        noise_seed: int | None = None,
    ) -> None:
        check_nonnegative("triplet_weight", triplet_weight)
        check_count("steps", steps)
        check_count("top_k", top_k)
        check_positive("softplus_beta", softplus_beta)
        self.triplet_weight, self.eps, self.step_size, self.steps = triplet_weight, eps, step_size, steps
        self.top_k, self.softplus_beta, self.random_start, self.noise_seed = top_k, softplus_beta, random_start, noise_seed

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """``x_adv`` maximising the masked per-sample triplet loss; detached ``[B, C, H, W]``."""
        sur = softplus_surrogate(model, self.softplus_beta)
        with eval_mode(model, sur):
            pos_c, neg_c, _ = pos_neg_gradients(sur, x.detach(), y)
            mask = top_k_pixel_mask(pos_c, self.top_k)

            def objective(z: Tensor) -> Tensor:
                pos_a, neg_a, _ = pos_neg_gradients(sur, z, y, create_graph=True)
                return triplet_per_sample(x, z, pos_c, pos_a, neg_c, neg_a, mask)

            start = x.detach()
            if self.random_start:
                start = start + draw_noise(x, "linf", self.eps, self.noise_seed)
            return projected_ascent(objective, x, start, self.eps, self.step_size, self.steps, "linf")

    @checked_loss()
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        B = x.shape[0]
        x_adv = self.attack(model, x, y)
        X = torch.cat([x.detach(), x_adv], dim=0)
        pos, neg, logits = pos_neg_gradients(model, X, y.repeat(2), create_graph=True)
        trip = triplet_per_sample(x, x_adv, pos[:B], pos[B:], neg[:B], neg[B:]).mean()
        ce = F.cross_entropy(logits[B:], y)
        loss = ce + self.triplet_weight * trip
        return LossOutput(loss, {"ce": ce.detach(), "triplet": trip.detach()}, logits[:B].detach())

    def __repr__(self) -> str:
        return (
            f"ARTLoss(triplet_weight={self.triplet_weight}, eps={self.eps:.5g}, step_size={self.step_size:.5g}, "
            f"steps={self.steps}, top_k={self.top_k}, softplus_beta={self.softplus_beta})"
        )
