"""The uniform-smoothing attribution certificate as an evaluator.

F. Wang & A. W.-K. Kong, "Certified ℓ2 Attribution Robustness via Uniformly Smoothed
Attributions", arXiv:2405.06361 (2024). With a base attribution bounded by ``‖ĝ‖₂ ≤ M`` and
``h(x) = E_{η~U(B₂(0,r))} ĝ(x+η)``, every ``‖δ‖₂ ≤ ε`` satisfies
``‖h(x+δ) − h(x)‖₂ ≤ D = 2M·I_{ε²/4r²}(½, (d+1)/2)``, hence
``cos(h(x), h(x+δ)) ≥ sqrt(1 − D²/ℓ²)`` whenever ``D < ℓ``, where ℓ is a lower confidence
bound on ``‖h(x)‖`` from the Monte Carlo mean ``ĥ_N`` (holds with probability ≥ 1 − α per
sample). robustattr uses this bound, not the unsound summarised one of that line of work
(available with ``bound="paper"`` for reproduction only, in columns marked UNSOUND).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustattr.attributions.base import Attribution
from robustattr.certify.margins import norm_lower_bound
from robustattr.certify.smoothing import (
    DEFAULT_EPS_GRID,
    DEFAULT_TAUS,
    UNSOUND_LABEL,
    UniformSmoothingCertifier,
    certified_cosine,
)
from robustattr.evaluation._common import check_batch, fmt, lower_median, masked_mean
from robustattr.evaluation.base import Evaluator, describe
from robustattr.registry import register
from robustattr.utils import contract, eval_mode

__all__ = ["SmoothingEvaluator"]

_MARGINS = ("auto", "bernstein", "hoeffding")


@register("evaluator", "smoothing")
class SmoothingEvaluator(Evaluator):
    """Certify every sample by uniform ℓ2 smoothing (sound; Wang & Kong, arXiv:2405.06361).

    Builds a :class:`~robustattr.certify.UniformSmoothingCertifier` and certifies the
    **predicted** class of each sample; the noise of sample i comes from a generator seeded
    ``seed + index_i`` (independent of batching and of the number of processes).

    Args:
        attribution: base attribution g (default :class:`~robustattr.attributions.Saliency`),
            bounded to ``‖ĝ‖ ≤ bound_M`` by ``bounding``.
        radius: smoothing radius r > 0 (ℓ2, pixel units).
        n_samples: Monte Carlo samples N per input.
        alpha: failure probability α of the lower confidence bound on ‖h‖.
        margin: the lower confidence bound: ``"auto"``, ``"bernstein"`` or ``"hoeffding"``
            (passed to the certifier when it supports margin methods; otherwise only the
            Hoeffding margin ``t = (M/√N)(1 + sqrt(2 ln(1/α)))`` exists and ``"auto"`` means it).
        bound_M: the norm bound M > 0.
        bounding: ``"normalize"`` (ĝ = M·g/‖g‖) or ``"clip"``.
        eps_grid: ε values (≥ 0) of the certified cosine.
        taus: cosine thresholds τ ∈ (0, 1) of the largest certified ε.
        rows_per_forward: noisy copies per forward/backward pass (speed only; not part of
            :meth:`params`).
        seed: base of the per-sample noise seeds.
        bound: ``"sound"`` or ``"paper"`` (adds the UNSOUND summarised bound as extra columns).

    Columns (each ``[b]``): ``label``, ``prediction`` (int64), ``h_norm`` = ‖ĥ_N‖,
    ``h_norm_lower`` = ℓ (float64), ``cos@eps=E`` (certified cosine at ε = E, NaN = not
    certified), ``eps_max@tau=T`` (largest certified ε with cosine ≥ T, NaN = not certified),
    ``seconds`` (wall time per sample; not reproducible), and with ``bound="paper"``
    ``UNSOUND_paper_cos@eps=E``. E and T are spelled ``f"{v:g}"``.

    Summary (medians are lower medians, the ⌈N/2⌉-th smallest value):
    ``cos_median@eps=E`` (not-certified samples rank lowest; NaN when the median sample is
    not certified), ``frac_certified@tau=T,eps=E`` (fraction with certified cosine ≥ T),
    ``eps_max_median@tau=T`` (not certified counts as 0), ``h_norm_median``,
    ``h_norm_lower_median``, ``accuracy`` (prediction = label).

    Cost per sample: N attribution evaluations (N forward + backward passes).
    """

    name = "smoothing"

    def __init__(
        self,
        attribution: Attribution | None = None,
        radius: float = 0.25,
        n_samples: int = 1000,
        alpha: float = 1e-3,
        margin: str = "auto",
        bound_M: float = 1.0,
        bounding: str = "normalize",
        eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
        taus: Sequence[float] = DEFAULT_TAUS,
        rows_per_forward: int = 1024,
        seed: int = 0,
        bound: str = "sound",
    ) -> None:
        if margin not in _MARGINS:
            raise ValueError(f"margin must be one of {_MARGINS}, got {margin!r}")
        if not isinstance(rows_per_forward, int) or rows_per_forward < 1:
            raise ValueError(f"rows_per_forward must be an integer >= 1, got {rows_per_forward!r}")
        self.certifier = UniformSmoothingCertifier(
            attribution=attribution, radius=radius, n_samples=n_samples, alpha=alpha, bound_M=bound_M, bounding=bounding,
            eps_grid=list(eps_grid), taus=list(taus), batch_size=rows_per_forward, seed=seed, bound=bound, margin=margin,
        )
        c = self.certifier
        self.attribution = c.attribution
        self.radius, self.n_samples, self.alpha, self.margin = c.radius, c.n_samples, c.alpha, margin
        self.bound_M, self.bounding, self.bound, self.seed = c.M, c.bounding, c.bound, int(seed)
        self.eps_grid = tuple(float(e) for e in np.asarray(c.eps_grid).reshape(-1))
        self.taus = tuple(float(t) for t in np.asarray(c.taus).reshape(-1))
        self.rows_per_forward = int(rows_per_forward)
        self._eps_names = [fmt(e) for e in self.eps_grid]
        self._tau_names = [fmt(t) for t in self.taus]
        for what, names in (("eps_grid", self._eps_names), ("taus", self._tau_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} has values that print the same ({names}); make them distinct")

    # ---- margin --------------------------------------------------------------------------
    @property
    def margin_method(self) -> str:
        """The lower confidence bound actually used (``"auto"`` resolved): ``"bernstein"`` or ``"hoeffding"``."""
        return str(self.certifier.margin_method)

    def best_case_lower_bound(self) -> float:
        """ℓ for the largest possible ``‖ĥ_N‖ = M``: if it is ≤ 0, no sample can ever be certified.

        Computed with the certifier's own margin function for the configured method (the
        Hoeffding ``M − t`` or the Bernstein lower bound at ``‖ĥ_N‖ = M``).
        """
        c = self.certifier
        return float(norm_lower_bound(c.M, c.n_samples, c.alpha, c.M, c.margin_method))

    # ---- contract ------------------------------------------------------------------------
    def columns(self, num_classes: int | None = None) -> list[str]:
        """``label, prediction, h_norm, h_norm_lower, cos@eps=…, eps_max@tau=…, seconds`` (+ UNSOUND columns)."""
        cols = ["label", "prediction", "h_norm", "h_norm_lower"]
        cols += [f"cos@eps={e}" for e in self._eps_names]
        cols += [f"eps_max@tau={t}" for t in self._tau_names]
        cols.append("seconds")
        if self.bound == "paper":
            cols += [f"{UNSOUND_LABEL}_cos@eps={e}" for e in self._eps_names]
        return cols

    def params(self) -> dict[str, Any]:
        """Every parameter that changes a certificate (``rows_per_forward`` does not)."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "attribution": describe(self.attribution),
            "radius": self.radius,
            "n_samples": self.n_samples,
            "alpha": self.alpha,
            "margin": self.margin,
            "margin_method": self.margin_method,
            "bound_M": self.bound_M,
            "bounding": self.bounding,
            "eps_grid": list(self.eps_grid),
            "taus": list(self.taus),
            "seed": self.seed,
            "bound": self.bound,
            "noise_block": int(self.certifier.noise_block),
            "explain": "pred",
        }

    def warnings(self, input_shape: Sequence[int]) -> list[str]:
        """Settings under which nothing (or no ε of the grid) can be certified for inputs of ``input_shape``."""
        out: list[str] = []
        r, M = self.radius, self.bound_M
        if all(e >= 2 * r for e in self.eps_grid):
            out.append(f"every eps in eps_grid is >= 2*radius = {2 * r:g}: the smoothing balls do not overlap, nothing can be certified")
        ell = self.best_case_lower_bound()
        if ell <= 0:
            out.append(
                f"Monte Carlo margin >= M = {M:g} ({self.margin_method}, n_samples={self.n_samples}, alpha={self.alpha:g}): "
                "the lower bound on ||h|| is <= 0 even for ||h_N|| = M, so nothing can be certified; raise n_samples"
            )
        elif not out:
            d = math.prod(int(s) for s in input_shape)
            cos = certified_cosine(np.array([ell]), np.asarray(self.eps_grid), r, d, M)
            if np.isnan(cos).all():
                out.append(
                    f"even a sample with ||h_N|| = M = {M:g} certifies no eps of eps_grid at d = {d}, radius = {r:g} "
                    f"(lower bound on ||h|| {ell:.3g}); use smaller eps or a larger radius"
                )
        return out

    def cost(self) -> float:
        """N attribution evaluations per sample."""
        return float(self.n_samples)

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, *, check_range: bool = True
    ) -> dict[str, Tensor]:
        """Certify the predicted class of ``x: [b, C, H, W]`` (labels ``y``, dataset ``index``: ``[b]``).

        ``check_range=False`` lets pixels outside [0, 1] through (:func:`robustattr.utils.contract.range_option`).
        """
        with contract.range_option(check_range):
            return self._evaluate(model, x, y, index)

    def _evaluate(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        check_batch(x, y, index, model)
        with eval_mode(model):
            cert = self.certifier.certify(model, x.detach(), y=None, index=index)
        out: dict[str, Tensor] = {
            "label": y.to(torch.int64),
            "prediction": cert.y.to(torch.int64),
            "h_norm": cert.h_norm.to(torch.float64),
            "h_norm_lower": cert.h_norm_lower.to(torch.float64),
        }
        for j, e in enumerate(self._eps_names):
            out[f"cos@eps={e}"] = cert.cos_lower[:, j]
        for k, t in enumerate(self._tau_names):
            out[f"eps_max@tau={t}"] = cert.eps_max[:, k]
        out["seconds"] = cert.seconds
        if cert.paper_cos_unsound is not None:
            for j, e in enumerate(self._eps_names):
                out[f"{UNSOUND_LABEL}_cos@eps={e}"] = cert.paper_cos_unsound[:, j]
        return out

    def summarize(self, results: Mapping[str, Tensor]) -> dict[str, float]:
        """Medians and fractions over all samples (see the class docstring)."""
        out: dict[str, float] = {}
        for e in self._eps_names:
            cos = results[f"cos@eps={e}"].to(torch.float64)
            out[f"cos_median@eps={e}"] = lower_median(cos)
            for t, tv in zip(self._tau_names, self.taus, strict=True):
                out[f"frac_certified@tau={t},eps={e}"] = masked_mean(torch.nan_to_num(cos, nan=-math.inf) >= tv)
        for t in self._tau_names:
            out[f"eps_max_median@tau={t}"] = lower_median(torch.nan_to_num(results[f"eps_max@tau={t}"].to(torch.float64), nan=0.0))
        out["h_norm_median"] = lower_median(results["h_norm"])
        out["h_norm_lower_median"] = lower_median(results["h_norm_lower"])
        out["accuracy"] = masked_mean(results["label"] == results["prediction"])
        return out
