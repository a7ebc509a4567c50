"""Ball-overlap volumes for uniform ℓ2 smoothing (Wang & Kong, "Certified ℓ2 Attribution Robustness via Uniformly Smoothed Attributions", arXiv:2405.06361).

Two ℓ2 balls of radius ``r`` in ``d`` dimensions whose centres are ``ε`` apart do not
overlap on the fraction

    ρ(ε, r, d) = I_{ε²/(4r²)}(½, (d+1)/2)        (ε < 2r; ρ = 1 for ε ≥ 2r)

of either ball's volume, ``I_x(a, b)`` the regularised incomplete beta function. This is
the only numerically safe form: the textbook ``1 − I_{1−ε²/4r²}((d+1)/2, ½)`` cancels to 0
for small ε (and would certify cos = 1). ``scipy.special.betainc`` evaluates the form
above in float64 without underflow for d from 1 to well beyond 10⁶ and ε/r down to 1e-12.

All functions take Python floats, NumPy arrays or tensors, broadcast them, and return
float64 NumPy arrays (or a float for scalar input). They are called once per batch of
certificates, never inside a sampling loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special, stats

ArrayLike = float | int | np.ndarray | torch.Tensor | list | tuple


def _f64(v: ArrayLike) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().to("cpu", torch.float64).numpy()
    return np.asarray(v, dtype=np.float64)


def _check_r_d(r: float, d: int) -> None:
    if not r > 0:
        raise ValueError(f"radius r must be > 0, got {r}")
    if int(d) != d or d < 1:
        raise ValueError(f"dimension d must be a positive integer, got {d}")


def _out(a: np.ndarray) -> np.ndarray | float:
    return float(a) if a.ndim == 0 else a


def nonoverlap_fraction(eps: ArrayLike, r: float, d: int) -> np.ndarray | float:
    """``ρ(ε, r, d) = I_{ε²/(4r²)}(½, (d+1)/2)`` for ε < 2r, 1 for ε ≥ 2r.

    The fraction of ``B₂(x, r)`` not covered by ``B₂(x+δ, r)`` when ``‖δ‖₂ = ε``; the lens
    (overlap) fraction is ``1 − ρ``. Used by the certificate ``‖h(x+δ) − h(x)‖ ≤ 2Mρ``.

    Args:
        eps: ε ≥ 0, any shape (vectorised over ε grids).
        r: smoothing radius r > 0.
        d: input dimension ``C·H·W``.
    Returns:
        ρ in [0, 1], float64, shape of ``eps``.
    Raises:
        ValueError: r ≤ 0, d < 1 or a negative ε.
    """
    _check_r_d(r, d)
    e = _f64(eps)
    if np.any(e < 0) or np.any(np.isnan(e)):
        raise ValueError(f"eps must be >= 0, got {eps}")
    ratio = e / (2.0 * r)
    x = np.minimum(ratio, 1.0) ** 2
    rho = special.betainc(0.5, (d + 1) / 2.0, x)
    rho = np.where(ratio >= 1.0, 1.0, rho)
    return _out(np.asarray(rho, dtype=np.float64))


def lens_fraction(eps: ArrayLike, r: float, d: int) -> np.ndarray | float:
    """Overlap fraction ``1 − ρ(ε, r, d)`` (|B(x,r) ∩ B(x+δ,r)| / |B(x,r)|)."""
    return _out(1.0 - _f64(nonoverlap_fraction(eps, r, d)))


def nonoverlap_fraction_inverse(p: ArrayLike, r: float, d: int) -> np.ndarray | float:
    """The ε with ``ρ(ε, r, d) = p``: ``ε = 2r·sqrt(I⁻¹_p(½, (d+1)/2))`` (``betaincinv``).

    ``p ≤ 0`` gives 0 and ``p ≥ 1`` gives 2r. ρ is increasing in ε, so every ε' ≤ the
    result has ``ρ(ε') ≤ p``. NaN in, NaN out.
    """
    _check_r_d(r, d)
    pp = _f64(p)
    with np.errstate(invalid="ignore"):
        q = special.betaincinv(0.5, (d + 1) / 2.0, np.clip(pp, 0.0, 1.0))
        eps = 2.0 * r * np.sqrt(q)
        eps = np.where(pp <= 0, 0.0, np.where(pp >= 1, 2.0 * r, eps))
        eps = np.where(np.isnan(pp), np.nan, eps)
    return _out(np.asarray(eps, dtype=np.float64))


def nonoverlap_fraction_large_d(eps: ArrayLike, r: float, d: int) -> np.ndarray | float:
    """Large-d approximation ``ρ ≈ 2Φ(ε·sqrt(d+1)/(2r)) − 1`` (``erf(ε·sqrt((d+1)/2)/(2r))``).

    From ``Beta(½, (d+1)/2)`` ≈ ``χ²₁/(d+1)`` for large d. Diagnostic only (the certifier
    uses the exact form).
    """
    _check_r_d(r, d)
    e = _f64(eps)
    return _out(np.minimum(special.erf(e * math.sqrt((d + 1) / 2.0) / (2.0 * r)), 1.0))


def eps_max_large_d(p: ArrayLike, r: float, d: int) -> np.ndarray | float:
    """Large-d inverse ``ε ≈ (2r/sqrt(d+1))·Φ⁻¹((1+p)/2)`` (normal approximation of the beta distribution)."""
    _check_r_d(r, d)
    pp = _f64(p)
    return _out(2.0 * r / math.sqrt(d + 1) * stats.norm.ppf((1.0 + pp) / 2.0))
