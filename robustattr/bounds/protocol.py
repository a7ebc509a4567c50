"""Seed-001 validation protocol: attack every sample, compare attacked deviations with the bounds.

For each sample the first-order bounds of :mod:`robustattr.bounds.worst_case` are computed
(``T_e``, ``T'_e``, ``T_c``), then the attribution is attacked ``attack_repeats`` times
(different random starts):

- ℓ2: PGD-20 on ``‖g(x̃) − g(x)‖₂`` (:class:`robustattr.attacks.L2AttributionAttack`,
  euclidean objective, random start, normalised steps ``α = 2.5ε/steps``);
- ℓ∞: IFIA top-k, 200 sign steps (:class:`robustattr.attacks.ifia.TopKAttack`, k = 100 on
  28×28 digits), random start for repeats.

The attacks run on the same smooth network whose Jacobian is bounded (the softplus surrogate
of a ReLU model, or the model itself), so attacked distances and bounds describe one function;
the label of every iterate is checked on that network, and misclassified samples are skipped
(reported, not attacked). Per sample we record the mean and max over repeats of the attacked
Euclidean distance ``‖g(x̃) − g(x)‖₂`` and angle ``arccos cos(g(x̃), g(x))`` in degrees.

Summary (over attacked samples), as in seed 001 Tables 2–3: ``T_hat_e`` (mean attacked
distance), ``T_e`` (mean bound) with ``frac_outside_T_e`` (share of samples whose largest
attacked distance exceeds their ``T_e``), ``T_e_prime`` with ``frac_outside_T_e_prime`` and
``max_rel_excess_T_e_prime = max_i (T̂_e,i − T'_e,i)/T'_e,i`` (``T'_e`` is a first-order
estimate; a perfect attacker exceeds it by O(ε²), so this is small but need not be ≤ 0),
``T_hat_c_deg``/``T_c_deg`` and ``tightness = min_i (T_e,i − T̂_e,i)`` (negative: the
first-order estimate was exceeded on some sample).

The model runs in eval mode (every submodule's mode restored), and the input contract is
checked once (``ValueError`` naming the samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustattr.attributions import sample_gaussian
from robustattr.attributions.base import Attribution
from robustattr.bounds.worst_case import FULL_JACOBIAN_LIMIT, smooth_model, worst_case_bounds
from robustattr.utils import contract, eval_mode, per_sample_noise

_REPEAT_STRIDE = 1_000_003  # per-sample seed of repeat r: seed + r·stride + index


def _ifia_topk():  # type: ignore[no-untyped-def]
    try:
        from robustattr.attacks.ifia import TopKAttack
    except ImportError as err:  # pragma: no cover - depends on the attacks package
        raise ImportError("the l_inf protocol needs robustattr.attacks.ifia.TopKAttack (IFIA top-k)") from err
    return TopKAttack


@dataclass
class BoundsEvaluation:
    """Per-sample results of :func:`evaluate_bounds` (tensors ``[N]``) and their summary.

    Attributes:
        norm, eps, attack_repeats: protocol settings.
        tensors: ``xi_max``, ``g_norm``, ``T_e``, ``T_e_prime``, ``c``, ``T_c_deg`` (NaN where
            vacuous), ``vacuous``, ``dist_mean``/``dist_max`` (attacked Euclidean deviation over
            repeats), ``deg_mean``/``deg_max`` (attacked angle in degrees), ``skipped``
            (misclassified, not attacked), ``label_kept_pm`` (±ε v_max keeps the label for at
            least one sign).
    """

    norm: str
    eps: float
    attack_repeats: int
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Seed-001 table entries over attacked samples (``n``); NaN where undefined."""
        t = self.tensors
        keep = ~t["skipped"]
        n = int(keep.sum())
        out: dict[str, float] = {"norm": self.norm, "eps": self.eps, "n": n, "n_skipped": int(t["skipped"].sum())}  # type: ignore[dict-item]
        if n == 0:
            return out
        s = {k: v[keep].double() for k, v in t.items()}
        non_vac = ~s["vacuous"].bool()
        tc = s["T_c_deg"]
        out.update(
            xi_max=float(s["xi_max"].mean()),
            T_hat_e=float(s["dist_mean"].mean()),
            T_hat_e_max=float(s["dist_max"].max()),
            T_e=float(s["T_e"].mean()),
            frac_outside_T_e=float((s["dist_max"] > s["T_e"]).double().mean()),
            T_e_prime=float(s["T_e_prime"].mean()),
            frac_outside_T_e_prime=float((s["dist_max"] > s["T_e_prime"]).double().mean()),
            max_rel_excess_T_e_prime=float(_relative_excess(s["dist_max"], s["T_e_prime"]).max()),
            c_mean=float(s["c"].mean()),
            c_max=float(s["c"].max()),
            T_hat_c_deg=float(s["deg_mean"].mean()),
            T_c_deg=float(tc[non_vac].mean()) if bool(non_vac.any()) else math.nan,
            frac_vacuous=float(s["vacuous"].mean()),
            frac_outside_T_c=float((s["deg_max"][non_vac] > tc[non_vac]).double().mean()) if bool(non_vac.any()) else math.nan,
            tightness=float((s["T_e"] - s["dist_max"]).min()),
            frac_label_kept_pm=float(s["label_kept_pm"].mean()),
        )
        return out


def _relative_excess(dist: Tensor, bound: Tensor) -> Tensor:
    """``(dist − bound)/bound`` per sample; where ``bound = 0``: 0 if ``dist = 0``, else +inf."""
    excess = dist - bound
    safe = torch.where(bound > 0, bound, torch.ones_like(bound))
    return torch.where(bound > 0, excess / safe, torch.where(excess > 0, torch.full_like(excess, math.inf), torch.zeros_like(excess)))


def _angle_deg(a: Tensor, b: Tensor) -> Tensor:
    cos = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def evaluate_bounds(
    model: nn.Module,
    attribution: Attribution,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "l2",
    attack_repeats: int = 5,
    attack_steps: int | None = None,
    step_size: float | None = None,
    topk: int = 100,
    index: Tensor | None = None,
    seed: int = 0,
    batch_size: int = 32,
    iters: int = 100,
    tol: float = 1e-5,
    surrogate_beta: float = 10.0,
    full_jacobian_limit: int = FULL_JACOBIAN_LIMIT,
    smooth_pool: bool = True,
) -> BoundsEvaluation:
    """Bounds and attacked deviations for ``x: [N, C, H, W]``, ``y: [N]`` (seed-001 protocol).

    Args:
        model: classifier on ``[0,1]`` pixels (ReLU models are bounded and attacked on their
            softplus surrogate, with a warning).
        attribution: ``Saliency()``, ``InputXGradient()`` or ``IntegratedGradients()``.
        eps: budget ε of ``norm`` (``"l2"`` or ``"linf"``).
        attack_repeats: attacks per sample (seed 001 uses 20); the mean and max are kept.
        attack_steps: default 20 (ℓ2 PGD-20) or 200 (ℓ∞ IFIA).
        step_size: default ``2.5·ε/steps``.
        topk: k of the IFIA top-k attack (clamped to the number of pixels).
        index: dataset indices ``[N]`` for per-sample seeds (default ``arange(N)``); sample i
            of repeat r uses seed ``seed + r·1000003 + index_i`` (independent of batching).
        batch_size: samples per bound/attack batch.
        iters, tol, surrogate_beta, full_jacobian_limit, smooth_pool: see :func:`worst_case_bounds`.

    Returns:
        :class:`BoundsEvaluation`; ``.summary()`` gives the table row.

    Cost: per sample, Lanczos (≤ ``iters`` double-backward products), for ℓ∞ the full
    Jacobian (d rows), and ``attack_repeats × attack_steps`` attribution double backwards.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if attack_repeats < 1:
        raise ValueError(f"attack_repeats must be >= 1, got {attack_repeats}")
    if attack_steps is not None and attack_steps < 1:
        raise ValueError(f"attack_steps must be >= 1, got {attack_steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = attack_steps if attack_steps is not None else (20 if norm == "l2" else 200)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    if norm == "l2":
        from robustattr.attacks import L2AttributionAttack

        attacks = [
            L2AttributionAttack(attribution, eps, steps=steps, step_size=alpha, objective="euclidean", surrogate_beta=None, random_start=True)
        ] * attack_repeats
    else:
        TopKAttack = _ifia_topk()
        k = min(topk, x.shape[-1] * x.shape[-2])
        attacks = [
            TopKAttack(attribution, eps=eps, steps=steps, step_size=alpha, k=k, surrogate_beta=None, random_start=r > 0)
            for r in range(attack_repeats)
        ]
    index = torch.arange(x.shape[0], device=x.device) if index is None else index.to(x.device)
    chunks: dict[str, list[Tensor]] = {}
    with contract.entry() as outer, eval_mode(model):
        if outer:
            contract.check_call(model, x, y, index=index)
        smooth = smooth_model(model, surrogate_beta, smooth_pool)
        for i0 in range(0, x.shape[0], batch_size):
            xb, yb, ib = x[i0 : i0 + batch_size].detach(), y[i0 : i0 + batch_size], index[i0 : i0 + batch_size]
            gen = torch.Generator(device=xb.device).manual_seed(seed)
            start = per_sample_noise(sample_gaussian, seed + ib, 1, tuple(xb.shape[1:]), xb.device, dtype=xb.dtype, sigma=1.0)[0]
            b = worst_case_bounds(
                attribution, smooth, xb, yb, eps, norm=norm, iters=iters, tol=tol, full_jacobian_limit=full_jacobian_limit,
                generator=gen, start=start, smooth_pool=smooth_pool,
            )
            g0 = attribution(smooth, xb, yb).detach()
            dists, degs, skipped = [], [], None
            for r, attack in enumerate(attacks):
                res = attack(smooth, xb, yb, sample_seeds=seed + r * _REPEAT_STRIDE + ib)
                g_adv = attribution(smooth, res.x_adv, yb).detach()
                dists.append((g_adv - g0).flatten(1).norm(dim=1))
                degs.append(_angle_deg(g_adv, g0))
                skipped = res.skipped_misclassified
            dist, deg = torch.stack(dists), torch.stack(degs)
            row = {
                "index": ib, "xi_max": b.xi_max, "g_norm": b.g_norm, "T_e": b.T_e, "T_e_prime": b.T_e_prime, "c": b.c,
                "T_c_deg": b.T_c_deg, "vacuous": b.vacuous, "dist_mean": dist.mean(0), "dist_max": dist.amax(0),
                "deg_mean": deg.mean(0), "deg_max": deg.amax(0), "skipped": skipped,
                "label_kept_pm": b.label_kept_pos | b.label_kept_neg,
            }
            for k_, v in row.items():
                chunks.setdefault(k_, []).append(v.detach())
    tensors = {k_: torch.cat(v) for k_, v in chunks.items()}
    return BoundsEvaluation(norm=norm, eps=float(eps), attack_repeats=attack_repeats, tensors=tensors)
