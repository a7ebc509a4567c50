"""Ball non-overlap fractions against closed-form lens volumes, Monte Carlo and SPEC §5 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustattr.certify.volumes import (
    eps_max_large_d,
    lens_fraction,
    nonoverlap_fraction,
    nonoverlap_fraction_inverse,
    nonoverlap_fraction_large_d,
)


def lens_area_2d(eps: float, r: float) -> float:
    """Area of the intersection of two discs of radius r, centres eps apart (closed form)."""
    return 2 * r * r * math.acos(eps / (2 * r)) - 0.5 * eps * math.sqrt(4 * r * r - eps * eps)


def lens_volume_3d(eps: float, r: float) -> float:
    """Volume of the intersection of two 3-balls of radius r, centres eps apart (closed form)."""
    return math.pi * (4 * r + eps) * (2 * r - eps) ** 2 / 12


@pytest.mark.parametrize("r", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("t", [0.0, 0.01, 0.2, 0.5, 0.9, 1.3, 1.99])
def test_lens_fraction_exact_d2_d3(r: float, t: float) -> None:
    eps = t * r
    np.testing.assert_allclose(lens_fraction(eps, r, 2), lens_area_2d(eps, r) / (math.pi * r * r), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lens_fraction(eps, r, 3), lens_volume_3d(eps, r) / (4 / 3 * math.pi * r**3), rtol=1e-12, atol=1e-14)


def test_spec_lens_values() -> None:
    assert lens_fraction(0.5, 1.0, 2) == pytest.approx(0.6850376424742924, rel=1e-12)
    assert lens_fraction(0.5, 1.0, 3) == pytest.approx(0.6328125, rel=1e-12)


@pytest.mark.parametrize(
    "eps_over_r,d,ref",
    [
        (1e-3, 784, 1.117358e-2),
        (1e-3, 3072, 2.211060e-2),
        (1e-3, 150528, 1.538163e-1),
        (1e-4, 150528, 1.547719e-2),
        (1e-9, 784, 1.1173946e-8),
    ],
)
def test_spec_reference_values(eps_over_r: float, d: int, ref: float) -> None:
    for r in (0.1, 1.0):
        assert nonoverlap_fraction(eps_over_r * r, r, d) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("d,ref", [(784, 1.176e-2), (3072, 5.940e-3), (150528, 8.487e-4)])
def test_spec_eps_max_values(d: int, ref: float) -> None:
    p = 0.6 * math.sqrt(1 - 0.9**2) / 2
    assert nonoverlap_fraction_inverse(p, 1.0, d) == pytest.approx(ref, rel=1e-3)  # SPEC quotes 4 digits


@pytest.mark.parametrize("d,t", [(50, 0.1), (50, 0.3), (784, 0.03), (784, 0.06)])
def test_monte_carlo_lens(d: int, t: float) -> None:
    """Uniform points in B(0, r): z = r·U^{1/d}·Z/‖Z‖; in lens iff ‖z − ε e₁‖ ≤ r.

    Only ‖z‖ and z₁ are needed: Z₁ ~ N(0,1), ‖Z‖² = Z₁² + χ²_{d−1} (independent of betainc).
    """
    rng = np.random.default_rng(1234 + d)
    n, r = 400_000, 1.0
    eps = t * r
    z1 = rng.standard_normal(n)
    znorm = np.sqrt(z1**2 + rng.chisquare(d - 1, n))
    rad = r * rng.random(n) ** (1.0 / d)
    p1 = rad * z1 / znorm
    inside = rad**2 - 2 * eps * p1 + eps**2 <= r * r
    est = inside.mean()
    sigma = math.sqrt(est * (1 - est) / n)
    assert abs(lens_fraction(eps, r, d) - est) <= 3 * sigma


def test_no_underflow_or_cancellation_large_d() -> None:
    for d in (1, 10, 784, 10**6):
        rho = np.asarray(nonoverlap_fraction(np.array([1e-12, 1e-9, 1e-6]), 1.0, d))
        assert np.all(rho > 0) and np.all(np.isfinite(rho))
        # tiny ε: ρ ≈ (ε/2r)·2Γ((d+2)/2)/(√π Γ((d+1)/2)) (first term of the series), relative 1e-6
        lead = 2 * math.exp(math.lgamma((d + 2) / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
        np.testing.assert_allclose(rho[:2], lead * np.array([1e-12, 1e-9]) / 2, rtol=1e-6)
    # the textbook form 1 − I_{1−x}((d+1)/2, ½) cancels to exactly 0 here; ours does not
    from scipy.special import betainc

    assert 1 - betainc((784 + 1) / 2, 0.5, 1 - (1e-9 / 2) ** 2) == 0.0
    assert nonoverlap_fraction(1e-9, 1.0, 784) > 1e-8


def test_saturation_and_vectorisation() -> None:
    eps = torch.tensor([[0.0, 1.0], [2.0, 5.0]])
    rho = nonoverlap_fraction(eps, 1.0, 3)
    assert rho.shape == (2, 2) and rho[0, 0] == 0.0 and rho[1, 0] == 1.0 and rho[1, 1] == 1.0
    assert np.all(np.diff(nonoverlap_fraction(np.linspace(0, 2, 50), 1.0, 100)) >= 0)


@pytest.mark.parametrize("d", [1, 2, 3, 784, 3072, 150528, 10**6])
def test_inverse_round_trip(d: int) -> None:
    ts = np.array([1e-9, 1e-6, 1e-4, 1e-3]) if d > 100 else np.array([1e-6, 1e-3, 0.1, 0.7, 1.5])
    r = 0.7
    back = nonoverlap_fraction_inverse(nonoverlap_fraction(ts * r, r, d), r, d)
    np.testing.assert_allclose(back, ts * r, rtol=1e-8)
    ps = np.array([1e-10, 1e-4, 0.1, 0.45])
    np.testing.assert_allclose(nonoverlap_fraction(nonoverlap_fraction_inverse(ps, r, d), r, d), ps, rtol=1e-8)
    assert nonoverlap_fraction_inverse(0.0, r, d) == 0.0 and nonoverlap_fraction_inverse(1.0, r, d) == 2 * r


def test_large_d_approximation() -> None:
    d, r = 150528, 1.0
    eps = np.array([1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(nonoverlap_fraction_large_d(eps, r, d), nonoverlap_fraction(eps, r, d), rtol=1e-4)
    p = np.array([1e-3, 0.01, 0.1])
    np.testing.assert_allclose(eps_max_large_d(p, r, d), nonoverlap_fraction_inverse(p, r, d), rtol=1e-4)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="eps"):
        nonoverlap_fraction(-1e-3, 1.0, 10)
    with pytest.raises(ValueError, match="radius"):
        nonoverlap_fraction(1e-3, 0.0, 10)
    with pytest.raises(ValueError, match="dimension"):
        nonoverlap_fraction(1e-3, 1.0, 0)
