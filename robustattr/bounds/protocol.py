"""Validation protocol of the worst-case bounds: attack every sample, measure the attacked deviation.

F. Wang & A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations",
CVPR 2023, arXiv:2303.00340 (Sec. 5, Tables 2–5). Each sample is attacked ``repeats`` times
(different random starts) on the smooth network whose Jacobian is bounded:

- ℓ2: PGD-20 on ``‖g(x̃) − g(x)‖₂`` (:class:`robustattr.attacks.L2AttributionAttack`,
  euclidean objective, random start, normalised steps ``α = 2.5ε/steps``);
- ℓ∞: IFIA top-k, 200 sign steps (:class:`robustattr.attacks.TopKAttack`; A. Ghorbani,
  A. Abid & J. Zou, AAAI 2019, arXiv:1710.10547), random start for repeats after the first.

Per sample we record the mean and max over repeats of the attacked Euclidean distance
``‖g(x̃) − g(x)‖₂`` and angle ``arccos cos(g(x̃), g(x))`` in degrees; samples the network
misclassifies are skipped (reported, not attacked). The comparison with ``T_e``/``T'_e`` and
the table summary are :class:`robustattr.evaluation.BoundsEvaluator` (which also provides
``evaluate_bounds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attacks.ifia import TopKAttack
from robustattr.attacks.l2_attribution import L2AttributionAttack
from robustattr.attributions.base import Attribution

__all__ = ["REPEAT_STRIDE", "angle_deg", "attacked_deviations", "default_attack_steps", "protocol_attacks"]

#: Per-sample seed of repeat r of sample i: ``seed + r·REPEAT_STRIDE + index_i``.
REPEAT_STRIDE = 1_000_003


def default_attack_steps(norm: str) -> int:
    """20 (ℓ2 PGD-20) or 200 (ℓ∞ IFIA top-k), the protocol's step counts."""
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    return 20 if norm == "l2" else 200


def protocol_attacks(
    attribution: Attribution,
    norm: str,
    eps: float,
    repeats: int,
    steps: int | None = None,
    step_size: float | None = None,
    topk: int = 100,
    num_pixels: int | None = None,
) -> list[Any]:
    """The ``repeats`` attacks of the protocol for ``norm`` at budget ``eps``.

    Args:
        attribution: the attribution attacked (the one bounded).
        norm: ``"l2"`` (PGD on the Euclidean deviation) or ``"linf"`` (IFIA top-k).
        eps: the budget ε > 0.
        repeats: number of attacks (≥ 1); ℓ2 repeats differ by their random start,
            ℓ∞ repeats after the first start at random.
        steps: default :func:`default_attack_steps`.
        step_size: default ``2.5·ε/steps``.
        topk: k of the IFIA top-k attack, clamped to ``num_pixels`` (H·W) when given.

    Returns:
        A list of ``repeats`` attacks with ``surrogate_beta=None`` (they run on the network
        they are handed, the smooth one).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    steps = steps if steps is not None else default_attack_steps(norm)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    if norm == "l2":
        atk = L2AttributionAttack(attribution, eps, steps=steps, step_size=alpha, objective="euclidean", surrogate_beta=None, random_start=True)
        return [atk] * repeats
    if norm != "linf":
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    k = min(topk, num_pixels) if num_pixels is not None else topk
    return [
        TopKAttack(attribution, eps=eps, steps=steps, step_size=alpha, k=k, surrogate_beta=None, random_start=r > 0)
        for r in range(repeats)
    ]


def angle_deg(a: Tensor, b: Tensor) -> Tensor:
    """The angle ``∠(a_i, b_i)`` in degrees per sample: ``[B, ...] × [B, ...] → [B]`` (dtype of ``a``).

    Computed as ``2·atan2(‖â − b̂‖, ‖â + b̂‖)`` with unit vectors ``â = a/‖a‖`` in float64: unlike
    ``arccos(cos)``, accurate for small angles (``arccos`` of a float32 cosine cannot resolve
    angles below ~0.03°) and exactly 0 for equal inputs. A zero vector makes 90° with anything.
    """
    fa, fb = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)
    na, nb = fa.norm(dim=1, keepdim=True), fb.norm(dim=1, keepdim=True)
    ua, ub = fa / na.clamp_min(1e-300), fb / nb.clamp_min(1e-300)
    theta = 2.0 * torch.atan2((ua - ub).norm(dim=1), (ua + ub).norm(dim=1))
    zero = (na == 0).flatten() | (nb == 0).flatten()
    theta = torch.where(zero, torch.full_like(theta, torch.pi / 2), theta)
    return torch.rad2deg(theta).to(a.dtype)


def attacked_deviations(
    attribution: Attribution,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[Any],
    index: Tensor,
    seed: int = 0,
    g0: Tensor | None = None,
) -> dict[str, Tensor]:
    """Attack every sample with each of ``attacks`` and measure the attribution's deviation.

    Args:
        attribution: g, evaluated on ``model`` at ``x`` and at each attacked ``x̃``.
        model: the smooth network the attacks and g run on (in eval mode).
        x: ``[B, C, H, W]``; y: ``[B]`` explained classes; index: ``[B]`` dataset indices.
        attacks: from :func:`protocol_attacks`; repeat r of sample i is seeded
            ``seed + r·REPEAT_STRIDE + index_i``.
        g0: ``g(x)`` if already computed.

    Returns:
        ``dist_mean``, ``dist_max`` (``‖g(x̃) − g(x)‖₂`` over repeats), ``deg_mean``,
        ``deg_max`` (angle in degrees) and ``skipped`` (bool: misclassified, not attacked), each ``[B]``.
    """
    g0 = attribution(model, x, y).detach() if g0 is None else g0
    dists, degs = [], []
    skipped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for r, attack in enumerate(attacks):
        res = attack(model, x, y, sample_seeds=seed + r * REPEAT_STRIDE + index)
        g_adv = attribution(model, res.x_adv, y).detach()
        dists.append((g_adv - g0).flatten(1).norm(dim=1))
        degs.append(angle_deg(g_adv, g0))
        skipped = res.skipped_misclassified.bool()
    dist, deg = torch.stack(dists), torch.stack(degs)
    return {"dist_mean": dist.mean(0), "dist_max": dist.amax(0), "deg_mean": deg.mean(0), "deg_max": deg.amax(0), "skipped": skipped}
