"""Sound certification of attribution robustness by uniform ℓ2 smoothing.

Wang & Kong, "Certified ℓ2 Attribution Robustness via Uniformly Smoothed Attributions"
(arXiv:2405.06361). Bounded base attribution ``ĝ`` (``‖ĝ(z)‖₂ ≤ M`` for every z), smoothed
attribution ``h(x) = E_{η~U(B₂(0,r))} ĝ(x+η)``. For every ``‖δ‖₂ ≤ ε``

    ‖h(x+δ) − h(x)‖₂ ≤ D = 2·M·ρ(ε, r, d),      ρ = I_{ε²/4r²}(½, (d+1)/2),

so, if ``D < ‖h(x)‖``, ``cos(h(x), h(x+δ)) ≥ sqrt(1 − D²/‖h(x)‖²)``. ``h`` is estimated by
the mean ``ĥ_N`` of N samples and ‖h‖ is replaced by a lower confidence bound ℓ that holds
with probability ≥ 1−α (:func:`robustattr.certify.margins.norm_lower_bound`: the Hoeffding
margin ``ℓ = ‖ĥ_N‖ − (M/√N)(1 + sqrt(2 ln(1/α)))`` or the variance-adaptive Bernstein
margin). Nothing is certified (NaN) where ``D ≥ ℓ``, ``ℓ ≤ 0`` or ``ε ≥ 2r``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from robustattr.attributions.base import Attribution, check_inputs
from robustattr.attributions.saliency import Saliency
from robustattr.attributions.smoothing import sample_l2_ball
from robustattr.certify.margins import MARGIN_METHODS, mc_margin, norm_lower_bound, resolve_margin
from robustattr.certify.volumes import (
    ArrayLike,
    _f64,
    nonoverlap_fraction,
    nonoverlap_fraction_inverse,
)
from robustattr.utils import contract
from robustattr.utils.modes import eval_mode

DEFAULT_EPS_GRID: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DEFAULT_TAUS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
UNSOUND_LABEL = "UNSOUND_paper"


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {alpha}")


def _check_M(M: float) -> None:
    if not (M > 0 and math.isfinite(M)):
        raise ValueError(f"bound_M (M) must be finite and > 0, got {M}")


_U64 = 2.0**-53  # unit roundoff of float64


def _check_M_for(M: float, dtype: torch.dtype, d: int) -> None:
    """M must be representable well inside ``dtype``: ``sqrt(d)·tiny ≤ M ≤ max/2``.

    Below that range the rounding of subnormal entries alone could exceed the slack that
    keeps ``‖ĝ‖ ≤ M``; above it ĝ could overflow.
    """
    fi = torch.finfo(dtype)
    lo, hi = math.sqrt(max(d, 1)) * fi.tiny, fi.max / 2.0
    if not lo <= M <= hi:
        raise ValueError(f"bound_M (M) = {M} cannot be enforced for a {dtype} attribution of dimension {d}: need {lo:.3g} <= M <= {hi:.3g}")


def _scaled_norm(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, u, s)``: ``a = max_i |x_i|``, ``u = x/a`` and ``s = ‖u‖₂`` per row of ``x: [B, d]`` (float64).

    ``‖x‖ = a·s`` without underflow or overflow (``1 ≤ s ≤ √d``); zero rows give ``a = 0``,
    ``u = 0``, ``s = 0``. ``a`` is treated as a constant (no gradient): ``u`` has the
    direction of x and ``u/s = x/‖x‖`` as a function of x, so gradients are exact.
    """
    a = _row_absmax(x.detach())
    u = x / torch.where(a > 0, a, torch.ones_like(a))
    return a, u, torch.linalg.vector_norm(u, dim=1, keepdim=True)


def _row_absmax(x: Tensor) -> Tensor:
    """``max_i |x_i|`` per row of ``x: [B, d]`` as ``[B, 1]`` (exact; no temporary ``|x|``)."""
    return torch.maximum(x.amax(dim=1, keepdim=True), -x.amin(dim=1, keepdim=True))


def _enforce_norm(y: Tensor, M: float, out_dtype: torch.dtype) -> Tensor:
    """``y·c`` cast to ``out_dtype`` with ``c = min(1, M'/‖y‖)`` chosen so that the result has ``‖·‖ ≤ M`` exactly.

    ``y: [B, d]`` float64. ``‖y‖`` is bounded from above in float64 by ``b·s·(1+κ)``
    (``b = max|y|``, ``s = ‖y/b‖`` as in ``_scaled_norm``; κ = (d+8)·2⁻⁵² covers the rounding of any summation order), and the
    target ``M' = M·(1 − ε_out − 16·2⁻⁵³)`` leaves room for the rounding of the product and
    of the cast to ``out_dtype`` (relative ε_out/2 per entry, plus at most ``tiny·ε_out/2``
    per subnormal entry, covered because ``M ≥ √d·tiny``). The factor is a constant for
    autograd (it differs from 1 by rounding only, or rescales an already bounded vector).
    """
    d = y.shape[1]
    with torch.no_grad():
        b = _row_absmax(y)
        b1 = torch.where(b > 0, b, torch.ones_like(b))
        s = torch.linalg.vector_norm(y / b1, dim=1, keepdim=True)
        kappa = (d + 8) * 2.0**-52
        target = M * (1.0 - torch.finfo(out_dtype).eps - 16.0 * _U64)
        c = torch.clamp((target / b1) / (s * (1.0 + kappa)), max=1.0)  # zero row: inf → 1
    return (y * c).to(out_dtype)


def bound_attribution(g: Tensor, M: float = 1.0, mode: str = "normalize") -> Tensor:
    """Norm-bounded attribution ``ĝ`` with ``‖ĝ_b‖₂ ≤ M`` for every row b and every finite g.

    ``normalize``: ``ĝ = M·g/‖g‖₂`` (``g = 0`` → ``ĝ = 0``); ``clip``: ``ĝ = g·min(1, M/‖g‖₂)``
    (Wang & Kong, "Certified ℓ2 Attribution Robustness via Uniformly Smoothed
    Attributions", arXiv:2405.06361; the certificate needs ``‖ĝ(z)‖ ≤ M`` at every z, never
    an empirical maximum).

    Computed in float64 whatever the dtype of g: ``‖g‖`` is evaluated scale-safely as
    ``max|g| · ‖g/max|g|‖`` (a plain norm underflows for entries below ~1e-154 in float64 /
    ~1e-19 in float32, and then ``M·g/‖g‖`` exceeds M), and a final factor
    ``min(1, M/‖ĝ‖)``, computed the same way with a rigorous rounding allowance, guarantees
    ``‖ĝ‖ ≤ M`` for the returned values in g's dtype. Normalize mode therefore returns
    ``‖ĝ‖ = M·(1 − O(ε_dtype + d·2⁻⁵²))``. Differentiable (``create_graph`` attributions).

    Args:
        g: ``[B, ...]`` floating attribution (e.g. ``[B, C, H, W]``).
        M: the norm bound, ``√d·tiny(dtype) ≤ M ≤ max(dtype)/2``.
        mode: ``"normalize"`` or ``"clip"``.
    Returns:
        ĝ, same shape and dtype as g.
    Raises:
        ValueError: bad mode, a non-floating g, or M outside the range of g's dtype.
    """
    if mode not in ("normalize", "clip"):
        raise ValueError(f"bounding mode must be 'normalize' or 'clip', got {mode!r}")
    if not torch.is_floating_point(g):
        raise ValueError(f"g must be a floating tensor, got {g.dtype}")
    _check_M(M)
    flat = g.reshape(g.shape[0], -1)
    _check_M_for(float(M), g.dtype, flat.shape[1])
    x = flat.to(torch.float64)
    a, u, nu = _scaled_norm(x)
    nz = nu > 0
    scale = torch.where(nz, M / torch.where(nz, nu, torch.ones_like(nu)), torch.zeros_like(nu))
    y = u * scale  # M·g/‖g‖ (0 for g = 0)
    if mode == "clip":
        fits = a <= M / torch.where(nz, nu.detach(), torch.ones_like(nu))  # ‖g‖ = a·ν ≤ M, no overflow
        y = torch.where(fits, x, y)
    return _enforce_norm(y, float(M), g.dtype).view_as(g)


class BoundedAttribution(Attribution):
    """``ĝ(x) = M·g(x)/‖g(x)‖₂`` (``mode="normalize"``) or ``g(x)·min(1, M/‖g(x)‖₂)`` (``"clip"``).

    Composes with ``UniformSmoothed(base=BoundedAttribution(...))`` and with attacks; it is
    the base attribution the certificate smooths. Shapes ``[B, C, H, W] → [B, C, H, W]``.

    Args:
        base: the attribution g (default :class:`Saliency`).
        M: the norm bound (> 0).
        mode: ``"normalize"`` (default) or ``"clip"``.
    """

    def __init__(self, base: Attribution | None = None, M: float = 1.0, mode: str = "normalize") -> None:
        _check_M(M)
        if mode not in ("normalize", "clip"):
            raise ValueError(f"mode must be 'normalize' or 'clip', got {mode!r}")
        self.base = base if base is not None else Saliency()
        self.M = float(M)
        self.mode = mode

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return bound_attribution(self.base(model, x, y, create_graph=create_graph), self.M, self.mode)


def certified_cosine(h_norm_lower: ArrayLike, eps: ArrayLike, r: float, d: int, M: float = 1.0) -> np.ndarray:
    """Certified lower bound on ``cos(h(x), h(x+δ))`` for all ``‖δ‖₂ ≤ ε`` (sound; arXiv:2405.06361).

    ``cos ≥ sqrt(1 − D²/ℓ²)``, ``D = 2·M·ρ(ε, r, d)``, if ``D < ℓ``; NaN ("not certified")
    where ``D ≥ ℓ``, ``ℓ ≤ 0`` (or NaN) or ``ε ≥ 2r``.

    Args:
        h_norm_lower: ℓ, a lower bound on ‖h(x)‖ (:func:`norm_lower_bound`), shape ``[*S]``.
        eps: ε grid, shape ``[*E]`` (ε ≥ 0).
        r, d, M: radius, dimension, norm bound.
    Returns:
        float64 array ``[*S, *E]`` (outer product over the two inputs).
    """
    _check_M(M)
    ell = _f64(h_norm_lower)
    e = _f64(eps)
    rho = _f64(nonoverlap_fraction(e, r, d))
    D = 2.0 * M * rho
    L = ell.reshape(ell.shape + (1,) * e.ndim)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = D / L
        cos = np.sqrt(1.0 - q * q)
    ok = (L > 0) & (D < L) & (e < 2.0 * r)
    return np.where(ok, cos, np.nan)


def paper_cosine_unsound(h_norm: ArrayLike, eps: ArrayLike, r: float, d: int, M: float = 1.0) -> np.ndarray:
    """UNSOUND. The bound quoted in secondary summaries of arXiv:2405.06361: ``T = ‖h‖/sqrt(‖h‖² + D²)``.

    Kept for reproduction only. A counterexample beats it: d=2, r=1, ε=0.3, M=1, ĝ = e₁ on
    the lens of the two balls and unit vectors at ±103.59° on the two crescents give a true
    cosine 0.8896 < T = 0.9002. Shape ``[*S, *E]``; NaN where ‖h‖ ≤ 0 or ε ≥ 2r.
    """
    _check_M(M)
    h = _f64(h_norm)
    e = _f64(eps)
    D = 2.0 * M * _f64(nonoverlap_fraction(e, r, d))
    H = h.reshape(h.shape + (1,) * e.ndim)
    with np.errstate(invalid="ignore", divide="ignore"):
        T = H / np.sqrt(H * H + D * D)
    return np.where((H > 0) & (e < 2.0 * r), T, np.nan)


def certified_eps_max(h_norm_lower: ArrayLike, taus: ArrayLike, r: float, d: int, M: float = 1.0) -> np.ndarray:
    """Largest ε with certified cosine ≥ τ: ``p* = ℓ·sqrt(1−τ²)/(2M)``, ``ε_max = 2r·sqrt(I⁻¹_{p*}(½,(d+1)/2))``.

    Shape ``[*S, *T]`` float64; NaN where ``ℓ ≤ 0`` (nothing is certified at any ε > 0).
    """
    _check_M(M)
    t = _f64(taus)
    if np.any(~((t > 0) & (t < 1))):
        raise ValueError(f"taus must lie in (0, 1), got {taus}")
    ell = _f64(h_norm_lower)
    L = ell.reshape(ell.shape + (1,) * t.ndim)
    p = L * np.sqrt(1.0 - t * t) / (2.0 * M)
    # p < 1/2 since ℓ ≤ ‖ĥ‖ ≤ M; shrink by one ulp-ish factor so betaincinv rounding never overshoots.
    eps = _f64(nonoverlap_fraction_inverse(np.where(L > 0, p, np.nan), r, d)) * (1.0 - 1e-12)
    return np.where(L > 0, eps, np.nan)


@dataclass(frozen=True)
class SmoothingCertificate:
    """Per-sample results of :meth:`UniformSmoothingCertifier.certify` (B samples, E ε values, T τ values).

    Attributes:
        y: ``[B]`` the class explained (predicted unless given).
        h_hat: ``[B, C, H, W]`` the Monte Carlo smoothed attribution ĥ_N.
        h_norm: ``[B]`` ‖ĥ_N‖ (float64).
        margin: ``[B]`` the Monte Carlo margin used, ``‖ĥ_N‖ − ℓ`` (the constant t for
            the Hoeffding margin; depends on ‖ĥ_N‖ for the Bernstein margin).
        margin_method: ``"bernstein"`` or ``"hoeffding"``, the lower bound used for ℓ.
        h_norm_lower: ``[B]`` ℓ, the lower confidence bound on ‖h‖ (≤ 0: not certified).
        eps: ``[E]``; cos_lower: ``[B, E]`` certified cosine (NaN: not certified).
        taus: ``[T]``; eps_max: ``[B, T]`` largest certified ε per τ (NaN: not certified).
        seconds: ``[B]`` wall time per sample (batch time / B).
        radius, n_samples, alpha, M, d: the parameters used.
        paper_cos_unsound: ``[B, E]`` the UNSOUND summarised bound, only with ``bound="paper"``.
    """

    y: Tensor
    h_hat: Tensor
    h_norm: Tensor
    margin: Tensor
    margin_method: str
    h_norm_lower: Tensor
    eps: Tensor
    cos_lower: Tensor
    taus: Tensor
    eps_max: Tensor
    seconds: Tensor
    radius: float
    n_samples: int
    alpha: float
    M: float
    d: int
    paper_cos_unsound: Tensor | None = field(default=None)


class UniformSmoothingCertifier:
    """Certify ``cos(h(x), h(x+δ))`` for ``‖δ‖₂ ≤ ε`` by uniform ℓ2 smoothing (sound; arXiv:2405.06361).

    For each input the noise ``η ~ U(B₂(0, r))`` is drawn on the input's device from a
    per-sample generator seeded ``seed + index`` in fixed blocks of ``noise_block`` rows,
    so results do not depend on how inputs are batched or sharded. All B·block noisy
    copies of a block are evaluated together, ``batch_size`` rows per forward/backward.
    ĝ is bounded in float64 (``‖ĝ‖ ≤ M`` exactly, :func:`bound_attribution`) and summed in
    float64. ‖h‖ is replaced by the lower confidence bound ℓ of
    :func:`~robustattr.certify.margins.norm_lower_bound`.

    Args:
        attribution: base attribution g (default :class:`Saliency`); bounded here.
        radius: r > 0 (pixel units).
        n_samples: N ≥ 1.
        alpha: failure probability α ∈ (0, 1) of the Monte Carlo bound.
        bound_M: M > 0.
        bounding: ``"normalize"`` (default) or ``"clip"``.
        eps_grid: ε values (≥ 0) for the certified cosine.
        taus: cosine thresholds τ ∈ (0, 1) for ε_max.
        batch_size: rows (noisy copies) per forward/backward.
        generator: if given and ``index`` is not passed to :meth:`certify`, all noise comes
            from it (results then depend on batching).
        seed: base seed of the per-sample generators.
        noise_block: noise rows drawn per sample at a time (part of the random stream's
            definition: changing it changes the draws).
        bound: ``"sound"`` (default) or ``"paper"`` (additionally reports the UNSOUND
            summarised bound, for reproduction only).
        margin: the lower bound ℓ on ‖h‖: ``"auto"`` (default: ``"bernstein"`` for N ≥ 100,
            else ``"hoeffding"``; decided from N alone, before sampling), ``"bernstein"``
            (variance-adaptive, Pinelis 1994 / Smale & Zhou 2007) or ``"hoeffding"``.

    :meth:`certify` and :meth:`min_radius` run the model in eval mode (BatchNorm uses its
    running statistics, so a sample's certificate does not depend on the other rows of a
    forward) and restore every submodule's mode afterwards. They check the input contract once
    per call: ``x`` finite with pixels in [0, 1], ``y`` classes in ``[0, K)``, model output
    ``[B, K]`` and finite; a violation (or a non-finite attribution at a noisy copy) raises
    ``ValueError`` naming the samples (by ``index`` when given): nothing is certified.
    """

    def __init__(
        self,
        attribution: Attribution | None = None,
        radius: float = 0.25,
        n_samples: int = 1000,
        alpha: float = 1e-3,
        bound_M: float = 1.0,
        bounding: str = "normalize",
        eps_grid: ArrayLike = DEFAULT_EPS_GRID,
        taus: ArrayLike = DEFAULT_TAUS,
        batch_size: int = 512,
        generator: torch.Generator | None = None,
        seed: int = 0,
        noise_block: int = 256,
        bound: str = "sound",
        margin: str = "auto",
    ) -> None:
        if not radius > 0:
            raise ValueError(f"radius (r) must be > 0, got {radius}")
        if n_samples < 1:
            raise ValueError(f"n_samples (N) must be >= 1, got {n_samples}")
        _check_alpha(alpha)
        _check_M(bound_M)
        if bounding not in ("normalize", "clip"):
            raise ValueError(f"bounding must be 'normalize' or 'clip', got {bounding!r}")
        e = _f64(eps_grid).reshape(-1)
        if e.size == 0 or np.any(~(e >= 0)):
            raise ValueError(f"eps_grid must be non-empty with every eps >= 0, got {eps_grid}")
        t = _f64(taus).reshape(-1)
        if t.size == 0 or np.any(~((t > 0) & (t < 1))):
            raise ValueError(f"taus must lie in (0, 1), got {taus}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if noise_block < 1:
            raise ValueError(f"noise_block must be >= 1, got {noise_block}")
        if bound not in ("sound", "paper"):
            raise ValueError(f"bound must be 'sound' or 'paper', got {bound!r}")
        if margin not in MARGIN_METHODS:
            raise ValueError(f"margin must be one of {MARGIN_METHODS}, got {margin!r}")
        self.attribution = attribution if attribution is not None else Saliency()
        self.radius, self.n_samples, self.alpha = float(radius), int(n_samples), float(alpha)
        self.M, self.bounding = float(bound_M), bounding
        self.eps_grid, self.taus = e, t
        self.batch_size, self.generator, self.seed = batch_size, generator, seed
        self.noise_block, self.bound, self.margin = noise_block, bound, margin

    @property
    def margin_method(self) -> str:
        """The margin used for ℓ: ``margin`` with ``"auto"`` resolved from N (``"bernstein"`` or ``"hoeffding"``)."""
        return resolve_margin(self.margin, self.n_samples)

    @property
    def hoeffding_margin(self) -> float:
        """The Hoeffding margin t = (M/√N)(1 + sqrt(2 ln(1/α))) (constant over samples)."""
        return mc_margin(self.n_samples, self.alpha, self.M)

    # ---- Monte Carlo -------------------------------------------------------------
    def _noise_block(self, x: Tensor, n: int, gens: list[torch.Generator] | None, radius: float) -> Tensor:
        """``[n, B, C, H, W]`` ℓ2-ball noise of radius ``radius``; one draw of n rows per sample generator."""
        shape = tuple(x.shape[1:])
        if gens is None:
            eta = sample_l2_ball(n * x.shape[0], shape, radius, self.generator, x.device, x.dtype)
            return eta.view(n, x.shape[0], *shape)
        return torch.stack([sample_l2_ball(n, shape, radius, g, x.device, x.dtype) for g in gens], dim=1)

    def smoothed_sum(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        n_samples: int,
        gens: list[torch.Generator] | None,
        index: Tensor | None = None,
        radius: float | None = None,
    ) -> Tensor:
        """``Σ_{i≤N} ĝ(x + η_i)`` in float64, ``[B, C, H, W]``; raises on non-finite attributions.

        ``radius`` defaults to the certifier's r.
        """
        r = self.radius if radius is None else float(radius)
        B = x.shape[0]
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        bad = torch.zeros(B, dtype=torch.bool, device=x.device)
        done = 0
        while done < n_samples:
            n = min(self.noise_block, n_samples - done)
            z = (x.unsqueeze(0) + self._noise_block(x, n, gens, r)).reshape(n * B, *x.shape[1:])
            yy = y.repeat(n)
            for s in range(0, n * B, self.batch_size):
                rows = slice(s, min(s + self.batch_size, n * B))
                g = self.attribution(model, z[rows], yy[rows]).detach().to(torch.float64)
                bad |= _nonfinite_rows(g, rows, B)
                g = bound_attribution(g, self.M, self.bounding)
                gv = g.view(-1, *x.shape[1:])
                total.index_add_(0, torch.arange(rows.start, rows.stop, device=x.device) % B, gv)
            done += n
        if bool(bad.any()):
            which = torch.nonzero(bad).flatten()
            names = (index[which] if index is not None else which).tolist()
            raise ValueError(f"non-finite (NaN/inf) attribution for sample(s) with index {names}; cannot certify")
        return total

    def _generators(self, x: Tensor, index: Tensor | None, offset: int = 0) -> list[torch.Generator] | None:
        if index is None:
            if self.generator is not None:
                return None
            index = torch.arange(x.shape[0])
        return [torch.Generator(device=x.device).manual_seed(int(self.seed) + int(i) + offset) for i in index.tolist()]

    # ---- certificates ---------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Predicted classes ``[B]`` (chosen before any noise is drawn)."""
        return model(x).argmax(dim=1)

    def certify(
        self, model: nn.Module, x: Tensor, y: Tensor | None = None, index: Tensor | None = None, *, check_range: bool = True
    ) -> SmoothingCertificate:
        """Certify a batch ``x: [B, C, H, W]`` (``y``: class explained, default the prediction).

        ``index: [B]`` dataset indices seed the per-sample noise (``seed + index``); without
        it, ``arange(B)`` (or ``generator`` if one was given). Eval mode, input contract: see
        the class docstring; ``check_range=False`` lets pixels outside [0, 1] through
        (:func:`robustattr.utils.contract.range_option`; the radius is then in the units of ``x``).
        """
        with contract.range_option(check_range), contract.entry() as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y, index=index)
            return self._certify(model, x, y, index, self.radius, self.alpha, 0, self.eps_grid)

    def _certify(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor | None,
        index: Tensor | None,
        radius: float,
        alpha: float,
        offset: int,
        eps_grid: np.ndarray,
    ) -> SmoothingCertificate:
        """One certificate at radius ``radius``, level ``alpha`` and ε grid ``eps_grid`` (no state is changed)."""
        start = time.perf_counter()
        method = self.margin_method  # from N only, before any noise is drawn
        if y is None:
            y = self.predict(model, x)
        check_inputs(x, y)
        if x.dim() != 4:
            raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
        total = self.smoothed_sum(model, x, y, self.n_samples, self._generators(x, index, offset), index, radius=radius)
        h_hat = total / self.n_samples
        h_norm = h_hat.flatten(1).norm(dim=1)
        ell = norm_lower_bound(h_norm, self.n_samples, alpha, self.M, method)
        d = math.prod(x.shape[1:])
        ell_np = ell.cpu().numpy()  # once per batch (synchronises; the wall time below includes the GPU work)
        cos = certified_cosine(ell_np, eps_grid, radius, d, self.M)
        epsm = certified_eps_max(ell_np, self.taus, radius, d, self.M)
        paper = paper_cosine_unsound(ell_np, eps_grid, radius, d, self.M) if self.bound == "paper" else None
        B = x.shape[0]
        secs = (time.perf_counter() - start) / B
        dev = x.device
        to = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev)  # noqa: E731
        return SmoothingCertificate(
            y=y.detach(),
            h_hat=h_hat.to(x.dtype),
            h_norm=h_norm,
            margin=h_norm - ell,
            margin_method=method,
            h_norm_lower=ell,
            eps=to(eps_grid),
            cos_lower=to(cos),
            taus=to(self.taus),
            eps_max=to(epsm),
            seconds=torch.full((B,), secs, dtype=torch.float64, device=dev),
            radius=radius,
            n_samples=self.n_samples,
            alpha=alpha,
            M=self.M,
            d=d,
            paper_cos_unsound=None if paper is None else to(paper),
        )

    def min_radius(
        self,
        model: nn.Module,
        x: Tensor,
        eps: float,
        tau: float,
        radii: ArrayLike,
        y: Tensor | None = None,
        index: Tensor | None = None,
        *,
        check_range: bool = True,
    ) -> Tensor:
        """Smallest r in ``radii`` whose certificate gives ``cos ≥ τ`` at ε, per sample (``[B]``, NaN: none).

        ‖h‖ depends on r, so every radius is certified with fresh samples (the per-sample
        stream is offset per radius). Each radius uses ``α/len(radii)`` (Bonferroni), so
        the reported radius is certified with probability ≥ 1−α despite the search. The
        margin is chosen as in :meth:`certify` (from N alone). Eval mode, input contract: see
        the class docstring (``check_range`` as in :meth:`certify`).
        """
        with contract.range_option(check_range), contract.entry() as outer, eval_mode(model):
            if outer:
                contract.check_call(model, x, y, index=index)
            return self._min_radius(model, x, eps, tau, radii, y, index)

    def _min_radius(
        self, model: nn.Module, x: Tensor, eps: float, tau: float, radii: ArrayLike, y: Tensor | None, index: Tensor | None
    ) -> Tensor:
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not 0 < tau < 1:
            raise ValueError(f"tau must be in (0, 1), got {tau}")
        rs = np.sort(_f64(radii).reshape(-1))
        if rs.size == 0 or np.any(~(rs > 0)):
            raise ValueError(f"radii must be non-empty and > 0, got {radii}")
        if y is None:
            y = self.predict(model, x)
        out = torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
        grid = np.array([eps], dtype=np.float64)
        for k, r in enumerate(rs.tolist()):
            cert = self._certify(model, x, y, index, r, self.alpha / rs.size, (k + 1) * 1_000_003, grid)
            ok = (cert.cos_lower[:, 0] >= tau) & torch.isnan(out)
            out = torch.where(ok, torch.full_like(out, r), out)
        return out


def _nonfinite_rows(g: Tensor, rows: slice, B: int) -> Tensor:
    """``[B]`` bool: which samples (row % B) have a non-finite attribution in ``g`` (rows ``rows``)."""
    bad_rows = ~torch.isfinite(g.flatten(1)).all(dim=1)
    idx = torch.arange(rows.start, rows.stop, device=g.device) % B
    counts = torch.zeros(B, dtype=torch.float32, device=g.device).index_add_(0, idx, bad_rows.to(torch.float32))
    return counts > 0
