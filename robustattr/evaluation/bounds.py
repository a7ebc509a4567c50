"""First-order worst-case attribution deviation estimates (and their validation) as an evaluator.

F. Wang & A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations",
CVPR 2023, arXiv:2303.00340. With ``J = ∂g/∂x`` of the attribution g on a smooth network:

- ℓ2: ``T_e = ξ_max·ε``, ``ξ_max = σ_max(J)`` (Lanczos, matrix-free);
- ℓ∞: ``T_e = ε·min(sqrt(Σ_ij |(JᵀJ)_ij|), √d·ξ_max)``;
- cosine: if ``T_e ≤ ‖g(x)‖``, ``1 − cos ≤ T_c = 1 − sqrt(1 − T_e²/‖g(x)‖²)`` (reported in degrees);
- generalised (Eq. 11): ``T'_e = c·T_e``, ``c = max{1, max_± ‖g(x ± ε v_max) − g(x)‖/(ξ_max ε)}``.

These are **first-order estimates, not certificates**: ``T'_e`` probes curvature along
``±v_max`` only, so a perfect attacker can exceed it by O(ε²). With ``attack_repeats > 0``
every sample is attacked (:mod:`robustattr.bounds.protocol`) and the summary reports how
often and by how much the attacked deviation exceeded the estimates — never that no
perturbation can.

ReLU networks have zero second derivatives almost everywhere, so everything is computed on
the softplus surrogate (same weights, ``ReLU → Softplus(β)`` and, with ``smooth_pool=True``,
max-pooling → log-mean-exp pooling with the same β); the explained class is the dataset
label and the label checks use the surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustattr.attributions import Saliency, sample_gaussian
from robustattr.attributions.base import Attribution
from robustattr.bounds.protocol import attacked_deviations, default_attack_steps, protocol_attacks
from robustattr.bounds.worst_case import (
    FULL_JACOBIAN_LIMIT,
    smooth_model,
    top_singular,
    worst_case_bounds,
)
from robustattr.evaluation._common import check_batch, lower_median, masked_mean
from robustattr.evaluation.base import Evaluator, describe
from robustattr.registry import register
from robustattr.utils import contract, eval_mode, per_sample_noise

__all__ = ["BoundsEvaluation", "BoundsEvaluator", "evaluate_bounds"]

_NORMS = ("l2", "linf")
_BOUND_COLS = ("T_e", "T_e_prime", "c", "T_c_deg", "vacuous")
_ATTACK_COLS = ("dist_mean", "dist_max", "deg_mean", "deg_max", "skipped", "label_kept_pm")


def _max(v: Tensor) -> float:
    return float(v.max()) if v.numel() else math.nan


def _min(v: Tensor) -> float:
    return float(v.min()) if v.numel() else math.nan


def relative_excess(dist: Tensor, bound: Tensor) -> Tensor:
    """``(dist − bound)/bound`` per sample; where ``bound = 0``: ``+inf`` if ``dist > 0``, else 0. ``[N]`` float64."""
    d, b = dist.to(torch.float64), bound.to(torch.float64)
    safe = torch.where(b > 0, b, torch.ones_like(b))
    at_zero = torch.where(d > 0, torch.full_like(d, math.inf), torch.zeros_like(d))
    return torch.where(b > 0, (d - b) / safe, at_zero)


@register("evaluator", "bounds")
class BoundsEvaluator(Evaluator):
    """Per-sample worst-case deviation estimates (Wang & Kong, CVPR 2023, arXiv:2303.00340).

    Per batch: ``ξ_max`` and ``v_max`` by batched Lanczos on ``JᵀJ`` once (start vector of
    sample i seeded ``seed + index_i``), then for each norm the bounds at ``eps[norm]``. With
    ``attack_repeats > 0`` also the validation protocol: ``attack_repeats`` attacks per sample
    and norm (ℓ2 PGD-20 on ``‖g(x̃) − g(x)‖₂``, ℓ∞ IFIA top-k with 200 steps; repeat r of
    sample i seeded ``seed + r·1000003 + index_i``).

    Args:
        attribution: the attribution g bounded (default :class:`Saliency`).
        norms: any of ``"l2"``, ``"linf"``.
        eps: ε per norm (a float applies to every norm), pixel units.
        iters: maximum Lanczos steps; tol: relative residual tolerance on ``ξ_max²``.
        surrogate_beta: β of the softplus (and log-mean-exp pooling) surrogate.
        smooth_pool: also replace max-pooling by log-mean-exp pooling (default True; without it
            attacks exceed first-order estimates on max-pool networks at any ε).
        full_jacobian_limit: largest d for the ℓ∞ ``Σ|P_ij|`` term (above: ``√d·ξ_max`` only).
        attack_repeats: attacks per sample and norm (0: bounds only).
        attack_steps: default 20 (ℓ2) / 200 (ℓ∞).
        topk: k of the ℓ∞ IFIA top-k attack (clamped to H·W).
        seed: base of the per-sample seeds.
        attack_step_size: default ``2.5·ε/steps``.

    Columns (each ``[b]``; per-norm names get the prefix ``"<norm>/"`` only with several
    norms): ``xi_max``, ``g_norm`` = ‖g(x)‖; per norm ``T_e``, ``T_e_prime``, ``c``,
    ``T_c_deg`` (NaN where vacuous), ``vacuous`` (bool, ``T_e > ‖g(x)‖``); with attacks also
    ``dist_mean``, ``dist_max`` (attacked ‖g(x̃) − g(x)‖₂ over repeats), ``deg_mean``,
    ``deg_max`` (angle, degrees), ``skipped`` (bool: misclassified by the surrogate, not
    attacked), ``label_kept_pm`` (bool: ``x ± ε v_max`` keeps the label for at least one sign).

    Summary over the samples not skipped (``n``; ``n_skipped`` the others; NaN where
    undefined): ``xi_max`` (mean), ``xi_max_median``, ``xi_max_max``; per norm ``T_e``,
    ``T_e_prime`` (means), ``T_e_median``, ``T_e_prime_median``, ``T_e_max``,
    ``T_e_prime_max``, ``c_mean``, ``c_max``, ``T_c_deg`` (mean over non-vacuous samples),
    ``T_c_deg_max``, ``frac_vacuous``; with attacks also ``T_hat_e`` (mean attacked
    distance), ``T_hat_e_max``, ``frac_outside_T_e``, ``frac_outside_T_e_prime`` (share of
    samples whose largest attacked distance exceeds their estimate),
    ``max_rel_excess_T_e_prime`` = ``max_i (dist_max_i − T'_e,i)/T'_e,i`` (reported as is: > 0
    means an attack exceeded ``T'_e``; ≤ 0 only says these attacks did not, not that none
    can), ``T_hat_c_deg``, ``frac_outside_T_c``, ``tightness`` = ``min_i (T_e,i − dist_max_i)``
    and ``frac_label_kept_pm``.

    Cost per sample: ≤ ``iters`` Lanczos steps (two reverse passes of the attribution's
    double-backward graph each), for ℓ∞ the full Jacobian (d rows, d ≤ ``full_jacobian_limit``),
    and ``attack_repeats × attack_steps`` attribution double backwards per norm.
    """

    name = "bounds"

    def __init__(
        self,
        attribution: Attribution | None = None,
        norms: Sequence[str] = ("l2",),
        eps: float | Mapping[str, float] = 0.1,
        iters: int = 100,
        tol: float = 1e-5,
        surrogate_beta: float = 10.0,
        smooth_pool: bool = True,
        full_jacobian_limit: int = FULL_JACOBIAN_LIMIT,
        attack_repeats: int = 0,
        attack_steps: int | None = None,
        topk: int = 100,
        seed: int = 0,
        attack_step_size: float | None = None,
    ) -> None:
        norms = tuple(norms)
        if not norms or any(n not in _NORMS for n in norms) or len(set(norms)) != len(norms):
            raise ValueError(f"norms must be a non-empty subset of {_NORMS} without repeats, got {norms}")
        if isinstance(eps, Mapping):
            unknown = [k for k in eps if k not in _NORMS]
            missing = [n for n in norms if n not in eps]
            if unknown or missing:
                raise ValueError(f"eps must map every norm in {norms} to a budget (missing {missing}, unknown {unknown})")
            eps_map = {n: float(eps[n]) for n in norms}
        else:
            eps_map = {n: float(eps) for n in norms}
        for n, e in eps_map.items():
            if not (e > 0 and math.isfinite(e)):
                raise ValueError(f"eps must be finite and > 0, got {e} for norm {n}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if not surrogate_beta > 0:
            raise ValueError(f"surrogate_beta must be > 0, got {surrogate_beta}")
        if full_jacobian_limit < 1:
            raise ValueError(f"full_jacobian_limit must be >= 1, got {full_jacobian_limit}")
        if attack_repeats < 0:
            raise ValueError(f"attack_repeats must be >= 0, got {attack_repeats}")
        if attack_steps is not None and attack_steps < 1:
            raise ValueError(f"attack_steps must be >= 1, got {attack_steps}")
        if attack_step_size is not None and not attack_step_size > 0:
            raise ValueError(f"attack_step_size must be > 0, got {attack_step_size}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.attribution = attribution if attribution is not None else Saliency()
        self.norms, self.eps = norms, eps_map
        self.iters, self.tol, self.surrogate_beta, self.smooth_pool = int(iters), float(tol), float(surrogate_beta), bool(smooth_pool)
        self.full_jacobian_limit = int(full_jacobian_limit)
        self.attack_repeats, self.attack_steps, self.attack_step_size = int(attack_repeats), attack_steps, attack_step_size
        self.topk, self.seed = int(topk), int(seed)

    # ---- contract ------------------------------------------------------------------------
    def key(self, norm: str, name: str) -> str:
        """Column/summary name of a per-norm quantity: ``name``, or ``norm/name`` with several norms."""
        return f"{norm}/{name}" if len(self.norms) > 1 else name

    def columns(self, num_classes: int | None = None) -> list[str]:
        """``xi_max, g_norm`` and, per norm, the bound (and attack) columns."""
        cols = ["xi_max", "g_norm"]
        per_norm = _BOUND_COLS + (_ATTACK_COLS if self.attack_repeats > 0 else ())
        for norm in self.norms:
            cols += [self.key(norm, c) for c in per_norm]
        return cols

    def params(self) -> dict[str, Any]:
        """Every parameter that changes a result (the explained class is the label)."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "attribution": describe(self.attribution),
            "norms": list(self.norms),
            "eps": dict(self.eps),
            "iters": self.iters,
            "tol": self.tol,
            "surrogate_beta": self.surrogate_beta,
            "smooth_pool": self.smooth_pool,
            "full_jacobian_limit": self.full_jacobian_limit,
            "attack_repeats": self.attack_repeats,
            "attack_steps": {n: self._steps(n) for n in self.norms} if self.attack_repeats else None,
            "attack_step_size": self.attack_step_size,
            "topk": self.topk,
            "seed": self.seed,
            "explain": "label",
        }

    def warnings(self, input_shape: Sequence[int]) -> list[str]:
        """Settings that weaken or change the estimates for inputs of ``input_shape`` ``(C, H, W)``."""
        out: list[str] = []
        d = math.prod(int(s) for s in input_shape)
        if "linf" in self.norms and d > self.full_jacobian_limit:
            out.append(f"d = {d} > full_jacobian_limit = {self.full_jacobian_limit}: the l_inf T_e uses sqrt(d)*xi_max only (loose)")
        if self.attack_repeats and "linf" in self.norms and len(input_shape) >= 2:
            hw = int(input_shape[-1]) * int(input_shape[-2])
            if self.topk > hw:
                out.append(f"topk = {self.topk} exceeds the {hw} pixels; the IFIA top-k attack uses k = {hw}")
        if not self.smooth_pool:
            out.append("smooth_pool=False: max-pooling is not smoothed; on max-pool networks attacks can exceed the first-order estimates at any eps")
        return out

    def cost(self) -> float:
        """Roughly the attribution double-backward passes per sample."""
        attacks = sum(self.attack_repeats * self._steps(n) for n in self.norms)
        return float(2 * self.iters + attacks + 1)

    def _steps(self, norm: str) -> int:
        return self.attack_steps if self.attack_steps is not None else default_attack_steps(norm)

    def smooth_network(self, model: nn.Module) -> nn.Module:
        """The network the estimates and attacks use: softplus (and, with ``smooth_pool``, pooling) surrogate."""
        return smooth_model(model, self.surrogate_beta, smooth_pool=self.smooth_pool)

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Per-sample estimates (and attacked deviations) for ``x: [b, C, H, W]``, labels ``y``, ``index: [b]``.

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            return self._evaluate(model, x, y, index)

    def _evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        check_batch(x, y, index, model)
        x, y, index = x.detach(), y.to(torch.int64), index.to(torch.int64)
        attr = self.attribution
        with eval_mode(model):
            smooth = self.smooth_network(model)
            start = per_sample_noise(sample_gaussian, index + self.seed, 1, tuple(x.shape[1:]), x.device, dtype=x.dtype, sigma=1.0)[0]
            gen = torch.Generator(device=x.device).manual_seed(self.seed)  # Lanczos breakdown restarts only
            xi, v = top_singular(attr, smooth, x, y, iters=self.iters, tol=self.tol, surrogate_beta=self.surrogate_beta, generator=gen, start=start)
            out: dict[str, Tensor] = {"xi_max": xi}
            g0: Tensor | None = None
            for norm in self.norms:
                b = worst_case_bounds(
                    attr, smooth, x, y, self.eps[norm], norm=norm, iters=self.iters, tol=self.tol,
                    surrogate_beta=self.surrogate_beta, full_jacobian_limit=self.full_jacobian_limit, singular=(xi, v),
                )
                out.setdefault("g_norm", b.g_norm)
                cols: dict[str, Tensor] = {"T_e": b.T_e, "T_e_prime": b.T_e_prime, "c": b.c, "T_c_deg": b.T_c_deg, "vacuous": b.vacuous}
                if self.attack_repeats > 0:
                    if g0 is None:
                        g0 = attr(smooth, x, y).detach()
                    attacks = protocol_attacks(
                        attr, norm, self.eps[norm], self.attack_repeats, self.attack_steps, self.attack_step_size,
                        self.topk, x.shape[-1] * x.shape[-2],
                    )
                    cols.update(attacked_deviations(attr, smooth, x, y, attacks, index, self.seed, g0))
                    cols["label_kept_pm"] = b.label_kept_pos | b.label_kept_neg
                for name, val in cols.items():
                    out[self.key(norm, name)] = val.detach()
        return out

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """Table entries over the samples not skipped (see the class docstring)."""
        attacks = self.attack_repeats > 0
        xi_all = results["xi_max"]
        skipped = torch.zeros(xi_all.shape[0], dtype=torch.bool, device=xi_all.device)
        if attacks:
            for norm in self.norms:
                skipped = skipped | results[self.key(norm, "skipped")].bool()
        keep = ~skipped
        s = {k: v[keep].to(torch.float64) for k, v in results.items() if v.shape[:1] == keep.shape}
        out: dict[str, float] = {"n": float(keep.sum()), "n_skipped": float(skipped.sum())}
        xi = s["xi_max"]
        out.update(xi_max=masked_mean(xi), xi_max_median=lower_median(xi), xi_max_max=_max(xi))
        for norm in self.norms:
            p = f"{norm}/" if len(self.norms) > 1 else ""
            T_e, T_ep, c = s[p + "T_e"], s[p + "T_e_prime"], s[p + "c"]
            vac = s[p + "vacuous"].bool()
            tc = s[p + "T_c_deg"][~vac]
            out[p + "T_e"], out[p + "T_e_median"], out[p + "T_e_max"] = masked_mean(T_e), lower_median(T_e), _max(T_e)
            out[p + "T_e_prime"], out[p + "T_e_prime_median"], out[p + "T_e_prime_max"] = masked_mean(T_ep), lower_median(T_ep), _max(T_ep)
            out[p + "c_mean"], out[p + "c_max"] = masked_mean(c), _max(c)
            out[p + "T_c_deg"], out[p + "T_c_deg_max"] = masked_mean(tc), _max(tc)
            out[p + "frac_vacuous"] = masked_mean(vac)
            if not attacks:
                continue
            dmax = s[p + "dist_max"]
            out[p + "T_hat_e"] = masked_mean(s[p + "dist_mean"])
            out[p + "T_hat_e_max"] = _max(dmax)
            out[p + "frac_outside_T_e"] = masked_mean(dmax > T_e)
            out[p + "frac_outside_T_e_prime"] = masked_mean(dmax > T_ep)
            out[p + "max_rel_excess_T_e_prime"] = _max(relative_excess(dmax, T_ep))
            out[p + "T_hat_c_deg"] = masked_mean(s[p + "deg_mean"])
            out[p + "frac_outside_T_c"] = masked_mean(s[p + "deg_max"][~vac] > tc)
            out[p + "tightness"] = _min(T_e - dmax)
            out[p + "frac_label_kept_pm"] = masked_mean(s[p + "label_kept_pm"])
        return out


@dataclass
class BoundsEvaluation:
    """Per-sample results of :func:`evaluate_bounds` (tensors ``[N]``) and their summary.

    Attributes:
        norm, eps, attack_repeats: protocol settings.
        tensors: ``index`` and the columns of :class:`BoundsEvaluator` with attacks
            (``xi_max``, ``g_norm``, ``T_e``, ``T_e_prime``, ``c``, ``T_c_deg``, ``vacuous``,
            ``dist_mean``, ``dist_max``, ``deg_mean``, ``deg_max``, ``skipped``, ``label_kept_pm``).
    """

    norm: str
    eps: float
    attack_repeats: int
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``norm``, ``eps`` and :meth:`BoundsEvaluator.summarize` (``n``, ``n_skipped`` as ints)."""
        ev = BoundsEvaluator(norms=(self.norm,), eps=self.eps, attack_repeats=self.attack_repeats)
        s: dict[str, Any] = dict(ev.summarize(self.tensors))
        s["n"], s["n_skipped"] = int(s["n"]), int(s["n_skipped"])
        return {"norm": self.norm, "eps": self.eps, **s}


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
    *,
    check_range: bool = True,
) -> BoundsEvaluation:
    """Bounds and attacked deviations for ``x: [N, C, H, W]``, labels ``y: [N]`` (Wang & Kong, CVPR 2023).

    A loop over batches of :meth:`BoundsEvaluator.evaluate` with ``norms=(norm,)`` and
    ``smooth_pool=False``: ReLU models are bounded and attacked on their softplus surrogate
    (with a warning); pass ``softplus_surrogate(model, β, smooth_pool=True)`` to smooth
    max-pooling as well.

    Args:
        model: classifier on ``[0,1]`` pixels.
        attribution: e.g. ``Saliency()``, ``InputXGradient()``, ``IntegratedGradients()``.
        eps: budget ε of ``norm`` (``"l2"`` or ``"linf"``).
        attack_repeats: attacks per sample (≥ 1; the paper uses 20); mean and max are kept.
        attack_steps: default 20 (ℓ2 PGD-20) or 200 (ℓ∞ IFIA).
        step_size: default ``2.5·ε/steps``.
        topk: k of the IFIA top-k attack (clamped to the number of pixels).
        index: dataset indices ``[N]`` for per-sample seeds (default ``arange(N)``).
        seed: base seed; batch_size: samples per batch.
        iters, tol, surrogate_beta, full_jacobian_limit: see :class:`BoundsEvaluator`.
        check_range: ``False`` lets pixels outside [0, 1] through the input check
            (:func:`robustattr.utils.contract.range_option`).

    Returns:
        :class:`BoundsEvaluation`; ``.summary()`` gives the table row.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if norm not in _NORMS:
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if attack_repeats < 1:
        raise ValueError(f"attack_repeats must be >= 1, got {attack_repeats}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ev = BoundsEvaluator(
        attribution, norms=(norm,), eps=eps, iters=iters, tol=tol, surrogate_beta=surrogate_beta, smooth_pool=False,
        full_jacobian_limit=full_jacobian_limit, attack_repeats=attack_repeats, attack_steps=attack_steps, topk=topk,
        seed=seed, attack_step_size=step_size,
    )
    index = torch.arange(x.shape[0], device=x.device) if index is None else index.to(x.device)
    chunks: dict[str, list[Tensor]] = {"index": []}
    for i0 in range(0, x.shape[0], batch_size):
        ib = index[i0 : i0 + batch_size]
        out = ev.evaluate(model, x[i0 : i0 + batch_size], y[i0 : i0 + batch_size], ib, check_range=check_range)
        chunks["index"].append(ib)
        for k, v in out.items():
            chunks.setdefault(k, []).append(v)
    tensors = {k: torch.cat(v) for k, v in chunks.items()}
    return BoundsEvaluation(norm=norm, eps=float(eps), attack_repeats=attack_repeats, tensors=tensors)
