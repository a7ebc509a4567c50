"""Lower confidence bounds on ‖h‖ (Hoeffding and Hilbert-space Bernstein): coverage and rounding.

(a) exact coverage for two-point fields, where ‖ĥ_N‖ is a function of a binomial count;
(b) adversarial fields in low dimension by simulation, with a check that the simulation
    detects an invalid bound; (c) through the certifier; (d) rounding against mpmath.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import binom
from torch import Tensor, nn

from robustattr.attributions import Attribution
from robustattr.certify import (
    UniformSmoothingCertifier,
    certified_cosine,
    certified_eps_max,
    hoeffding_samples_ratio,
    mc_margin,
    norm_lower_bound,
)
from robustattr.certify.margins import resolve_margin

N_GRID = (5, 10, 20, 50, 99, 100, 200, 500, 1000, 2000, 5000, 10_000)
ALPHA_GRID = (1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5)
METHODS = ("bernstein", "hoeffding")


# ---------------------------------------------------------------------------------------
# (a) exact two-point coverage
# ---------------------------------------------------------------------------------------


def sup_miss_zero_one(lower: np.ndarray, N: int) -> float:
    """sup over p of P_p(ℓ(K/N) > p), ĝ = e₁ w.p. p else 0 (clip mode; variance p − p² < M² − p²).

    ``lower[K] = ℓ(K/N)`` is nondecreasing in K. For ‖h‖ = p just below a value v = ℓ_j the
    miss set is {K ≥ j'}, j' the first index with ℓ ≥ v; P_p(K ≥ j') increases with p, so the
    supremum over that interval is the limit P_v(K ≥ j') (exact).
    """
    pos = np.nonzero(lower > 0)[0]
    if pos.size == 0:
        return 0.0
    v = lower[pos]
    first = np.searchsorted(lower, v, side="left")
    return float(binom.sf(first - 1, N, v).max())


def sup_miss_plus_minus(lower_of_x, N: int) -> float:
    """Upper bound on sup over p of P(miss), ĝ = ±e₁ (E‖ĝ‖² = M² = 1: the tight variance).

    ‖h‖ = s = 2p − 1, ‖ĥ_N‖ = |2K/N − 1|. With j indexing K ≥ N/2, the miss set for s in
    [v_prev, v) is {K ≥ j'} ∪ {K ≤ N − j'}; the upper part increases with p, the lower part
    decreases, so sf(j'−1; p(v)) + cdf(N−j'; p(v_prev)) bounds the supremum on the interval.
    """
    K = np.arange(math.ceil(N / 2), N + 1)
    lower = np.asarray(lower_of_x((2 * K - N) / N), dtype=np.float64)
    pos = np.nonzero(lower > 0)[0]
    if pos.size == 0:
        return 0.0
    v = lower[pos]
    first = np.searchsorted(lower, v, side="left")  # position in K of the first ℓ ≥ v
    v_prev = np.where(first > 0, lower[np.maximum(first - 1, 0)], 0.0).clip(min=0.0)
    jp = K[first]
    up = binom.sf(jp - 1, N, (1 + v) / 2)
    low = np.where(N - jp >= 0, binom.cdf(N - jp, N, (1 + v_prev) / 2), 0.0)
    low = np.where(N - jp < jp, low, 1.0)  # never happens for v > 0; kept conservative
    return float((up + low).max())


def exact_coverage_table(lower_fn) -> dict[tuple[str, int, float], float]:
    out = {}
    for N in N_GRID:
        for alpha in ALPHA_GRID:
            xs = np.arange(N + 1) / N
            out[("zero_one", N, alpha)] = sup_miss_zero_one(np.asarray(lower_fn(xs, N, alpha), dtype=np.float64), N) / alpha
            out[("plus_minus", N, alpha)] = sup_miss_plus_minus(lambda x, N=N, a=alpha: lower_fn(x, N, a), N) / alpha
    return out


@pytest.mark.parametrize("method", METHODS)
def test_exact_two_point_coverage(method: str) -> None:
    """P(ℓ > ‖h‖) ≤ α exactly, for every N in [5, 10⁴], α in [1e-3, 0.5], worst p."""
    table = exact_coverage_table(lambda x, N, a: norm_lower_bound(x, N, a, 1.0, method))
    worst = max(table.values())
    print(f"\n{method}: max P(miss)/α = {worst:.4f} at {max(table, key=table.get)}")
    assert worst <= 1.0, {k: v for k, v in table.items() if v > 1}
    assert worst > 0.01  # the computation is not vacuous: misses do happen


def test_exact_coverage_detects_an_invalid_bound() -> None:
    """The same computation rejects a bound that is too tight: Bernstein at level 10α, Hoeffding with t/2."""
    too_tight_b = exact_coverage_table(lambda x, N, a: norm_lower_bound(x, N, min(10 * a, 0.99), 1.0, "bernstein"))
    too_tight_h = exact_coverage_table(lambda x, N, a: np.asarray(x) - mc_margin(N, a) / 2)
    assert max(too_tight_b.values()) > 1.0 and max(too_tight_h.values()) > 1.0


# ---------------------------------------------------------------------------------------
# (b) adversarial fields by simulation (d = 3)
# ---------------------------------------------------------------------------------------


def _cap(gen: np.random.Generator, shape: tuple[int, ...], theta: float) -> np.ndarray:
    """Uniform on the cap {v ∈ S²: ∠(v, e₁) ≤ θ}: v₁ ~ U[cos θ, 1] (Archimedes), azimuth uniform."""
    z = gen.uniform(math.cos(theta), 1.0, shape)
    phi = gen.uniform(0, 2 * math.pi, shape)
    rho = np.sqrt(1 - z * z)
    return np.stack([z, rho * np.cos(phi), rho * np.sin(phi)], axis=-1)


def _field_samples(name: str, gen: np.random.Generator, reps: int, N: int) -> tuple[np.ndarray, float]:
    """``[reps]`` ‖ĥ_N‖ and the exact ‖h‖ for the named field."""
    if name.startswith("cap"):
        theta = math.radians(float(name[3:]))
        g = _cap(gen, (reps, N), theta)
        h = (1 + math.cos(theta)) / 2
    elif name == "clip_cap60":  # ‖ĝ‖ = R < M, R ~ U(0, 1)
        g = _cap(gen, (reps, N), math.pi / 3) * gen.uniform(0, 1, (reps, N, 1))
        h = 0.5 * (1 + math.cos(math.pi / 3)) / 2
    else:  # "pm_p": ±e₁ with P(+e₁) = p
        p = float(name[3:])
        g = np.where(gen.uniform(size=(reps, N, 1)) < p, 1.0, -1.0) * np.array([1.0, 0.0, 0.0])
        h = 2 * p - 1
    return np.linalg.norm(g.mean(axis=1), axis=1), h


FIELDS = ("cap30", "cap60", "cap90", "clip_cap60", "pm_0.93")


@pytest.mark.parametrize("method", METHODS)
def test_simulated_coverage_adversarial_fields(method: str) -> None:
    """Miss rate ≤ α + 3 standard errors over 4000 repetitions per (field, N, α)."""
    gen = np.random.default_rng(2024)
    reps = 4000
    worst = 0.0
    for field in FIELDS:
        for N in (20, 100, 400):
            hn, h = _field_samples(field, gen, reps, N)
            for alpha in (0.05, 0.2, 0.5):
                miss = float((np.asarray(norm_lower_bound(hn, N, alpha, 1.0, method)) > h).mean())
                assert miss <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps), (field, N, alpha, miss)
                worst = max(worst, miss / alpha)
    print(f"\n{method}: max simulated miss/α = {worst:.3f}")


def test_simulation_detects_an_invalid_bound() -> None:
    """Power: the same simulation flags ℓ = ‖ĥ_N‖ (no margin) on every field, and the Bernstein
    bound evaluated as if 30× more samples had been drawn on the two-point field."""
    gen = np.random.default_rng(7)
    alpha, N, reps = 0.2, 100, 4000
    limit = alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)
    for field in FIELDS:
        hn, h = _field_samples(field, gen, reps, N)
        assert (hn > h).mean() > limit, field
    hn, h = _field_samples("pm_0.93", gen, reps, N)
    assert (np.asarray(norm_lower_bound(hn, 30 * N, alpha)) > h).mean() > limit


# ---------------------------------------------------------------------------------------
# (c) through the certifier
# ---------------------------------------------------------------------------------------


class Dummy(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], 2, dtype=x.dtype)


class ConstField(Attribution):
    """ĝ = (1, 1, 1, 1)/2 everywhere: ‖h‖ = M for every r."""

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        return torch.ones_like(x)


class ArgmaxField(Attribution):
    """ĝ(z) = e_k, k = argmax z (d = 4): h(0) = (¼, ¼, ¼, ¼), ‖h‖ = ½."""

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        flat = x.flatten(1)
        return torch.nn.functional.one_hot(flat.argmax(dim=1), flat.shape[1]).to(x.dtype).view_as(x)


def test_certifier_reports_margin_and_auto_picks_by_n() -> None:
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    kw = dict(radius=0.5, alpha=1e-3, eps_grid=[0.0, 1e-3], taus=[0.9])
    for N, expect in ((99, "hoeffding"), (100, "bernstein"), (1000, "bernstein")):
        c = UniformSmoothingCertifier(ArgmaxField(), n_samples=N, **kw)
        assert c.margin == "auto" and c.margin_method == expect == resolve_margin("auto", N)
        cert = c.certify(Dummy(), x)
        assert cert.margin_method == expect
        ref = norm_lower_bound(cert.h_norm, N, 1e-3, 1.0, expect)
        assert torch.equal(cert.h_norm_lower, ref)
        torch.testing.assert_close(cert.margin, cert.h_norm - ref, rtol=0, atol=0)
    # "auto" never takes the better bound: at ‖ĥ‖ ≈ ½ and N = 100 Hoeffding happens to be larger, auto still uses Bernstein
    cert_auto = UniformSmoothingCertifier(ArgmaxField(), n_samples=100, **kw).certify(Dummy(), x)
    cert_h = UniformSmoothingCertifier(ArgmaxField(), n_samples=100, margin="hoeffding", **kw).certify(Dummy(), x)
    assert torch.equal(cert_auto.h_hat, cert_h.h_hat)
    assert (cert_h.h_norm_lower > cert_auto.h_norm_lower).all()
    with pytest.raises(ValueError, match="margin"):
        UniformSmoothingCertifier(margin="best")


def test_bernstein_tighter_near_M_through_certifier() -> None:
    """Constant field: ‖ĥ_N‖ = M, same samples; ℓ_B > ℓ_H, and the certificates follow ℓ."""
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    kw = dict(radius=0.5, n_samples=1000, alpha=1e-3, eps_grid=[1e-3, 1e-2, 0.1], taus=[0.5, 0.9])
    b = UniformSmoothingCertifier(ConstField(), margin="bernstein", **kw).certify(Dummy(), x)
    h = UniformSmoothingCertifier(ConstField(), margin="hoeffding", **kw).certify(Dummy(), x)
    assert torch.equal(b.h_hat, h.h_hat) and b.h_norm.sub(1).abs().max() < 1e-9
    assert (b.h_norm_lower > h.h_norm_lower).all()
    # ℓ_H = ‖ĥ‖ − t bit for bit (the refactored certifier computes the old formula)
    assert torch.equal(h.h_norm_lower, h.h_norm - mc_margin(1000, 1e-3))
    for cert in (b, h):
        ell = cert.h_norm_lower.numpy()
        np.testing.assert_array_equal(cert.cos_lower.numpy(), certified_cosine(ell, [1e-3, 1e-2, 0.1], 0.5, 4))
        np.testing.assert_array_equal(cert.eps_max.numpy(), certified_eps_max(ell, [0.5, 0.9], 0.5, 4))
    assert (b.eps_max > h.eps_max).all()


@pytest.mark.parametrize("margin", ["hoeffding", "bernstein"])
def test_min_radius_with_each_margin(margin: str) -> None:
    """Constant field: the smallest certified radius follows ℓ at α/len(radii) (Bonferroni), no state mutated."""
    from scipy.special import betainc

    d, eps, tau, N, alpha = 4, 0.05, 0.9, 400, 1e-3
    radii = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    cert = UniformSmoothingCertifier(ConstField(), radius=1.0, n_samples=N, alpha=alpha, margin=margin, eps_grid=[0.0, 0.3])
    got = cert.min_radius(Dummy(), torch.zeros(1, 1, 2, 2), eps, tau, radii)
    assert cert.radius == 1.0 and cert.eps_grid.tolist() == [0.0, 0.3]
    ell = float(norm_lower_bound(1.0, N, alpha / len(radii), 1.0, margin))
    ok = [r for r in radii if eps < 2 * r and 2 * betainc(0.5, (d + 1) / 2, eps**2 / (4 * r * r)) <= ell * math.sqrt(1 - tau**2)]
    assert float(got[0]) == min(ok)


def test_simulated_coverage_through_certifier() -> None:
    """ArgmaxField (‖h‖ = ½ exactly), 2000 independent repetitions: ℓ ≤ ‖h‖ in ≥ 1 − α of them, both margins."""
    reps, N, alpha = 2000, 40, 0.2
    x = torch.zeros(reps, 1, 2, 2, dtype=torch.float64)
    for margin in METHODS:
        cert = UniformSmoothingCertifier(ArgmaxField(), radius=0.5, n_samples=N, alpha=alpha, eps_grid=[0.0], batch_size=50_000, noise_block=N, margin=margin).certify(
            Dummy(), x, index=torch.arange(reps)
        )
        assert cert.margin_method == margin
        assert (cert.h_norm_lower <= 0.5).double().mean() >= 1 - alpha


# ---------------------------------------------------------------------------------------
# (d) rounding and the function's contract
# ---------------------------------------------------------------------------------------


def _root_mp(h: float, N: int, alpha: float, M: float) -> mpmath.mpf:
    """The exact ℓ by bisection on φ(u) − h over [0, u*] in 60-digit arithmetic (independent of the closed form)."""
    with mpmath.workdps(60):
        h, M = mpmath.mpf(h), mpmath.mpf(M)
        L = mpmath.log(2 / mpmath.mpf(alpha))
        k = 2 * L / N

        def phi(u: mpmath.mpf) -> mpmath.mpf:
            return u + 2 * M * k + mpmath.sqrt(k * (M * M - u * u))

        if phi(0) >= h:
            return mpmath.mpf(0)
        lo, hi = mpmath.mpf(0), M / mpmath.sqrt(1 + k)
        for _ in range(200):
            mid = (lo + hi) / 2
            if phi(mid) < h:
                lo = mid
            else:
                hi = mid
        return lo


def test_bernstein_rounded_down_against_mpmath() -> None:
    gen = np.random.default_rng(99)
    cases = []
    for _ in range(150):
        M = float(10 ** gen.uniform(-3, 3))
        N = int(10 ** gen.uniform(0, 9))
        alpha = float(10 ** gen.uniform(-12, math.log10(0.9)))
        h = float(M * gen.choice([gen.uniform(0, 1), 1 - 10 ** gen.uniform(-16, -1), 1.0]))
        cases.append((h, N, alpha, M))
    cases += [(1.0, 1, 0.5, 1.0), (0.0, 1000, 1e-3, 1.0), (1.0, 10**12, 1e-3, 1.0), (0.999, 10**7, 1e-300, 1.0), (1.0, 100, 0.999, 1.0)]
    exact_hits = 0
    for h, N, alpha, M in cases:
        got = float(norm_lower_bound(h, N, alpha, M, "bernstein"))
        ref = _root_mp(h, N, alpha, M)
        assert mpmath.mpf(got) <= ref, (h, N, alpha, M, got, ref)
        assert float(ref) - got <= 1e-13 * M, (h, N, alpha, M, got, ref)
        exact_hits += mpmath.mpf(got) == ref or float(ref) == got
    # vectorised call gives the same values
    hs = np.array([c[0] for c in cases if c[1] == 1000 and c[3] == 1.0] + [0.3, 0.9, 0.99])
    vec = norm_lower_bound(hs, 1000, 1e-3)
    assert np.array_equal(vec, [norm_lower_bound(float(v), 1000, 1e-3) for v in hs])


def test_hoeffding_value_and_gain() -> None:
    t = mc_margin(1000, 1e-3)
    assert t == pytest.approx((1 / math.sqrt(1000)) * (1 + math.sqrt(2 * math.log(1000))), rel=1e-15)
    assert norm_lower_bound(0.9, 1000, 1e-3, method="hoeffding") == 0.9 - t
    # samples ratio N'/N (closed form) against a direct search over N' with the Hoeffding margin
    for N in (1000, 10_000):
        for hn in (0.5, 0.95, 0.99):
            ratio = hoeffding_samples_ratio(hn, N, 1e-3)
            lb = norm_lower_bound(hn, N, 1e-3)
            n_prime = ratio * N
            assert norm_lower_bound(hn, math.ceil(n_prime * 1.0001), 1e-3, method="hoeffding") >= lb
            assert norm_lower_bound(hn, math.floor(n_prime * 0.9999), 1e-3, method="hoeffding") < lb
            assert ratio >= 1.0 if hn >= 0.9 else ratio > 0.5


def test_types_and_validation() -> None:
    ht = torch.tensor([0.2, 0.9], dtype=torch.float32)
    for method in METHODS:
        out = norm_lower_bound(ht, 500, 1e-2, method=method)
        assert isinstance(out, Tensor) and out.dtype == torch.float64 and out.shape == (2,)
        np.testing.assert_array_equal(out.numpy(), norm_lower_bound(ht.double().numpy(), 500, 1e-2, method=method))
        assert isinstance(norm_lower_bound(0.5, 500, 1e-2, method=method), float)
    assert norm_lower_bound(0.0, 10_000, 1e-3) == 0.0
    assert norm_lower_bound(1.0, 1, 0.5) == 0.0  # N = 1: nothing
    assert norm_lower_bound(1.0 + 1e-12, 1000, 1e-3) > 0  # rounding above M is tolerated
    for kwargs, name in [
        ({"n_samples": 0}, "n_samples"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"M": 0.0}, "M"),
        ({"method": "best"}, "method"),
        ({"h_norm": -0.1}, "h_norm"),
        ({"h_norm": float("nan")}, "h_norm"),
        ({"h_norm": 1.01}, "h_norm"),
    ]:
        args = {"h_norm": 0.5, "n_samples": 100, "alpha": 0.1, **kwargs}
        with pytest.raises(ValueError, match=name):
            norm_lower_bound(**args)
