"""Uniform ℓ2 smoothing certifier: counterexample, Monte Carlo margin, soundness under attack, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import betainc
from torch import Tensor, nn

from robustattr.attributions import Attribution, Saliency, UniformSmoothed, sample_l2_ball
from robustattr.certify import (
    BoundedAttribution,
    UniformSmoothingCertifier,
    certified_cosine,
    certified_eps_max,
    mc_margin,
    paper_cosine_unsound,
)
from robustattr.utils import per_sample_noise, range_check

# ---------------------------------------------------------------------------------------
# analytic fields (attributions that ignore the model): inputs [B, 1, 1, 2] or [B, 1, 2, 2]
# ---------------------------------------------------------------------------------------


class CounterexampleField(Attribution):
    """SPEC §5, d=2, r=1, ε=0.3: ĝ = e₁ on the lens of B(c₀,1) ∩ B(c₁,1), c₀=0, c₁=(0.3, 0);
    unit vector at +θ on the crescent B(c₀)∖B(c₁), at −θ on B(c₁)∖B(c₀) (θ = 103.59°)."""

    theta = math.radians(103.59)

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        p = x.reshape(-1, 2).double()
        in0 = p.norm(dim=1) <= 1.0
        in1 = (p - torch.tensor([0.3, 0.0], dtype=p.dtype)).norm(dim=1) <= 1.0
        c, s = math.cos(self.theta), math.sin(self.theta)
        out = torch.empty_like(p)
        out[:] = torch.tensor([1.0, 0.0], dtype=p.dtype)
        out[in0 & ~in1] = torch.tensor([c, s], dtype=p.dtype)
        out[in1 & ~in0] = torch.tensor([c, -s], dtype=p.dtype)
        return out.to(x.dtype).view_as(x)


class ArgmaxField(Attribution):
    """ĝ(z) = e_k, k = argmax_k z_k (d=4). For x = 0, h(x) = (¼, ¼, ¼, ¼) by symmetry of the ball."""

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        flat = x.flatten(1)
        return F.one_hot(flat.argmax(dim=1), flat.shape[1]).to(x.dtype).view_as(x)


class NaNField(Attribution):
    """Unit vector, except NaN for inputs whose sum exceeds 100."""

    def attribute(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False) -> Tensor:
        g = torch.ones_like(x) / math.sqrt(x[0].numel())
        return torch.where((x.flatten(1).sum(1) > 100).view(-1, 1, 1, 1), torch.full_like(x, float("nan")), g)


class Dummy(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], 2, dtype=x.dtype)


def counterexample_closed_form() -> tuple[float, float]:
    """(‖h‖, cos(h(c₀), h(c₁))) from the closed-form lens area (no betainc)."""
    r, eps = 1.0, 0.3
    lens = (2 * r * r * math.acos(eps / (2 * r)) - 0.5 * eps * math.sqrt(4 * r * r - eps * eps)) / math.pi
    cres = 1 - lens
    th = CounterexampleField.theta
    h0 = np.array([lens + cres * math.cos(th), cres * math.sin(th)])
    h1 = np.array([lens + cres * math.cos(th), -cres * math.sin(th)])
    return float(np.linalg.norm(h0)), float(h0 @ h1 / (np.linalg.norm(h0) * np.linalg.norm(h1)))


def test_counterexample_certificate_sound_paper_not() -> None:
    """The summarised bound T = ‖h‖/sqrt(‖h‖²+D²) of seed 000 is beaten by this field, which is why
    bound='paper' is never the default; sqrt(1 − D²/‖h‖²) is not."""
    hn, true_cos = counterexample_closed_form()
    assert hn == pytest.approx(0.787, abs=1e-3)
    assert true_cos == pytest.approx(0.8896, abs=1e-4)
    sound = float(certified_cosine(hn, 0.3, 1.0, 2, 1.0))
    paper = float(paper_cosine_unsound(hn, 0.3, 1.0, 2, 1.0))
    assert sound == pytest.approx(0.8752, abs=5e-4)  # SPEC rounds ‖h‖ to 0.787 and sound <= true_cos
    assert paper == pytest.approx(0.9002, abs=5e-4) and paper > true_cos


def test_counterexample_through_certifier() -> None:
    """Monte Carlo certifier on the field itself: certificate ≤ the true cosine; paper variant above it."""
    _, true_cos = counterexample_closed_form()
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    cert = UniformSmoothingCertifier(CounterexampleField(), radius=1.0, n_samples=200_000, alpha=1e-3, eps_grid=[0.3], batch_size=200_000, noise_block=200_000, bound="paper", seed=5).certify(Dummy(), x)
    assert float(cert.cos_lower[0, 0]) <= true_cos
    # MC check of the field (independent of the closed form): ĥ(c₀) ≈ h(c₀)
    hn, _ = counterexample_closed_form()
    assert float(cert.h_norm[0]) == pytest.approx(hn, abs=5e-3)
    # the paper bound, even with the conservative ℓ = ‖ĥ‖ − t in place of ‖h‖, exceeds the true cosine
    assert float(cert.paper_cos_unsound[0, 0]) > true_cos


def test_monte_carlo_margin_coverage() -> None:
    """‖ĥ_N − h‖ ≤ t in at least 1−α of 2000 independent repetitions (h known exactly)."""
    reps, N, alpha = 2000, 20, 0.2
    x = torch.zeros(reps, 1, 2, 2, dtype=torch.float64)
    cert = UniformSmoothingCertifier(ArgmaxField(), radius=0.5, n_samples=N, alpha=alpha, eps_grid=[0.0], batch_size=40_000, noise_block=N).certify(
        Dummy(), x, index=torch.arange(reps)
    )
    h = torch.full((reps, 4), 0.25, dtype=torch.float64)
    err = (cert.h_hat.flatten(1) - h).norm(dim=1)
    t = mc_margin(N, alpha, 1.0)
    assert t == pytest.approx((1 / math.sqrt(N)) * (1 + math.sqrt(2 * math.log(1 / alpha))))
    assert (err <= t).double().mean() >= 1 - alpha
    # unbiased: the mean over repetitions is h within 4 standard errors (per-coordinate var ≤ 3/16/N)
    se = math.sqrt(3 / 16 / N / reps)
    assert (cert.h_hat.flatten(1).mean(0) - 0.25).abs().max() <= 4 * se
    # repetitions are independent streams (seed + index), not copies
    assert torch.unique(cert.h_hat.flatten(1), dim=0).shape[0] > 200


def test_bounded_attribution() -> None:
    g0 = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]]).view(3, 1, 1, 2)

    class Const(Attribution):
        def attribute(self, model, x, y, create_graph=False):  # type: ignore[no-untyped-def]
            return g0

    y = torch.zeros(3, dtype=torch.long)
    x = torch.full_like(g0, 0.5)  # any valid image: Const ignores it
    n = BoundedAttribution(Const(), M=2.0)(Dummy(), x, y).flatten(1)
    torch.testing.assert_close(n, torch.tensor([[1.2, 1.6], [0.0, 0.0], [1.2, 1.6]]))
    c = BoundedAttribution(Const(), M=2.0, mode="clip")(Dummy(), x, y).flatten(1)
    torch.testing.assert_close(c, torch.tensor([[1.2, 1.6], [0.0, 0.0], [0.3, 0.4]]))
    with pytest.raises(ValueError, match="M"):
        BoundedAttribution(M=0.0)
    with pytest.raises(ValueError, match="mode"):
        BoundedAttribution(mode="tanh")


def test_bounded_composes_with_uniform_smoothed(small_cnn: nn.Module, digits_batch: tuple[Tensor, Tensor]) -> None:
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    sm = UniformSmoothed(radius=0.3, n_samples=4, base=BoundedAttribution(Saliency(), M=1.0), seed=0)
    noise = sm.sample_noise(x)
    h = sm.attribute_with_noise(small_cnn, x, y, noise)
    # explicit loop reference: normalise each noisy saliency, average
    ref = torch.zeros_like(x)
    for i in range(4):
        with range_check(False):  # the noisy copies leave [0, 1]
            g = Saliency()(small_cnn, x + noise[i], y)
        ref += g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) / 4
    torch.testing.assert_close(h, ref, rtol=1e-5, atol=1e-6)
    assert (h.flatten(1).norm(dim=1) <= 1 + 1e-6).all()


def test_not_certified_is_nan() -> None:
    # ε ≥ 2r and ℓ ≤ 0 are never a number
    cos = certified_cosine(np.array([0.5, -0.1, 0.0]), np.array([0.0, 1e-3, 2.0, 3.0]), 1.0, 10, 1.0)
    assert cos.shape == (3, 4)
    assert np.isnan(cos[:, 2:]).all() and np.isnan(cos[1:]).all() and cos[0, 0] == 1.0
    assert np.isnan(certified_eps_max(np.array([-0.1, 0.0]), [0.9], 1.0, 10)).all()
    # D ≥ ℓ: ρ(0.5, 1, 10) ≈ 0.58 → D ≈ 1.17 > 0.5
    assert np.isnan(certified_cosine(0.5, 0.5, 1.0, 10, 1.0))
    # N = 1: t > M ≥ ‖ĥ‖, so nothing is certified
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    cert = UniformSmoothingCertifier(ArgmaxField(), radius=0.5, n_samples=1, eps_grid=[0.0, 1e-3]).certify(Dummy(), x)
    assert torch.isnan(cert.cos_lower).all() and torch.isnan(cert.eps_max).all()


def test_eps_max_inverts_certificate() -> None:
    ell = np.array([0.2, 0.6, 0.95])
    taus = np.array([0.5, 0.9, 0.99])
    for d in (64, 784, 150528):
        em = certified_eps_max(ell, taus, 0.5, d)
        for i in range(3):
            for j in range(3):
                assert certified_cosine(ell[i], em[i, j], 0.5, d) >= taus[j] - 1e-9
                assert certified_cosine(ell[i], em[i, j] * 1.001, 0.5, d) < taus[j]


def test_min_radius_constant_field() -> None:
    """Constant unit field: ‖h‖ = 1 exactly for every r, so ℓ = 1 − t (Hoeffding) and the smallest certified r is
    the first grid radius with sqrt(1 − (2ρ/ℓ)²) ≥ τ — computed here with scipy.betainc directly."""

    class Const(Attribution):
        def attribute(self, model, x, y, create_graph=False):  # type: ignore[no-untyped-def]
            return torch.ones_like(x)

    d, eps, tau, N, alpha = 4, 0.05, 0.9, 400, 1e-3
    radii = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    cert = UniformSmoothingCertifier(Const(), radius=1.0, n_samples=N, alpha=alpha, margin="hoeffding")
    got = cert.min_radius(Dummy(), torch.zeros(1, 1, 2, 2), eps, tau, radii)
    ell = 1 - (1 / math.sqrt(N)) * (1 + math.sqrt(2 * math.log(len(radii) / alpha)))  # Bonferroni α/len
    ok = [r for r in radii if eps < 2 * r and 2 * betainc(0.5, (d + 1) / 2, eps**2 / (4 * r * r)) <= ell * math.sqrt(1 - tau**2)]
    assert float(got[0]) == min(ok)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Softplus(beta=10.0), nn.Linear(32, 10)).eval()


def test_determinism_and_batch_independence() -> None:
    from robustattr.data.digits import load_digits_tensors

    x = load_digits_tensors(8)[0][:6]
    model = _tiny_model()
    idx = torch.arange(100, 106)
    kw = dict(radius=0.3, n_samples=300, eps_grid=[1e-3, 1e-2], taus=[0.9], seed=7, noise_block=64)
    a = UniformSmoothingCertifier(batch_size=512, **kw).certify(model, x, index=idx)
    b = UniformSmoothingCertifier(batch_size=512, **kw).certify(model, x, index=idx)
    assert torch.equal(a.h_hat, b.h_hat) and torch.equal(a.cos_lower, b.cos_lower)
    # split in batches of 2 and a different rows-per-forward: same certificates
    parts = [UniformSmoothingCertifier(batch_size=37, **kw).certify(model, x[i : i + 2], index=idx[i : i + 2]) for i in (0, 2, 4)]
    torch.testing.assert_close(torch.cat([p.h_norm for p in parts]), a.h_norm, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(torch.cat([p.cos_lower for p in parts]), a.cos_lower, rtol=1e-6, atol=1e-9, equal_nan=True)
    # a different seed gives different noise
    c = UniformSmoothingCertifier(batch_size=512, **{**kw, "seed": 8}).certify(model, x, index=idx)
    assert not torch.equal(c.h_hat, a.h_hat)


def test_nan_attribution_names_the_sample() -> None:
    x = torch.zeros(3, 1, 2, 2)
    x[1] = 1000.0  # another pixel convention: only the attribution at the noisy copies is non-finite
    with pytest.raises(ValueError, match=r"index \[41\]"), range_check(False):
        UniformSmoothingCertifier(NaNField(), radius=0.1, n_samples=8).certify(Dummy(), x, index=torch.tensor([40, 41, 42]))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"radius": 0.0}, "radius"),
        ({"radius": -1.0}, "radius"),
        ({"n_samples": 0}, "n_samples"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"taus": [0.5, 1.0]}, "taus"),
        ({"taus": [0.0]}, "taus"),
        ({"eps_grid": [1e-3, -1e-3]}, "eps"),
        ({"bound_M": 0.0}, "bound_M"),
        ({"bounding": "tanh"}, "bounding"),
        ({"bound": "loose"}, "bound"),
    ],
)
def test_invalid_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        UniformSmoothingCertifier(**kwargs)


# ---------------------------------------------------------------------------------------
# soundness under attack
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def softplus_digits() -> tuple[nn.Module, Tensor, Tensor]:
    """A softplus MLP trained 300 Adam steps on 8×8 digits (smooth, so the attack has gradients); d = 64."""
    from robustattr.data.digits import load_digits_tensors

    x, y = load_digits_tensors(8)
    model = _tiny_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        i = torch.randint(0, 1500, (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(x[1500:]).argmax(1) == y[1500:]).float().mean() > 0.85
    return model, x[1500:1560], y[1500:1560]


@pytest.mark.slow
def test_soundness_under_attack(softplus_digits: tuple[nn.Module, Tensor, Tensor]) -> None:
    """The ℓ2 attribution attack on the smoothed, bounded attribution (common random numbers, N=16 inner
    samples, 10 steps) never pushes cos(ĥ(x), ĥ(x+δ)) below the certificate minus the Monte Carlo tolerance.

    Tolerance: the final evaluation uses N_e fresh samples shared by x and x+δ; with probability
    ≥ 1 − 2α_e both estimates are within t_e of h, so ‖ĥ(x+δ) − ĥ(x)‖ ≤ D + 2t_e and
    cos(ĥ(x), ĥ(x+δ)) ≥ sqrt(1 − (D + 2t_e)²/‖ĥ(x)‖²) =: the certificate with tolerance. We also
    require the attacked cosine to stay above the certifier's own certificate minus 1e-3.
    """
    from robustattr.attacks.l2_attribution import L2AttributionAttack

    model, x, y = softplus_digits
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:50], y[keep][:50]
    assert x.shape[0] == 50
    idx = torch.arange(x.shape[0])
    r, N_e, alpha_e = 0.5, 4000, 1e-4
    eps_list = [0.005, 0.02, 0.05]  # ε/r = 0.01, 0.04, 0.1 (d = 64)
    certifier = UniformSmoothingCertifier(radius=r, n_samples=4000, alpha=1e-3, eps_grid=eps_list, batch_size=50_000, noise_block=4000, seed=11)
    cert = certifier.certify(model, x, y=y, index=idx)
    assert (~torch.isnan(cert.cos_lower)).all(), "the test needs certified samples at every ε"
    bounded = BoundedAttribution(Saliency(), M=1.0)
    t_e = mc_margin(N_e, alpha_e)
    d = 64
    worst_gap = math.inf
    for k, eps in enumerate(eps_list):
        attack = L2AttributionAttack(
            UniformSmoothed(radius=r, n_samples=16, base=bounded), eps=eps, steps=10, objective="cosine", surrogate_beta=None, seed=k
        )
        res = attack(model, x, y)
        delta = (res.x_adv - x).flatten(1).norm(dim=1)
        assert (delta <= eps * (1 + 1e-4)).all()
        # final evaluation: fresh, large-N noise shared by x and x_adv (common random numbers)
        noise = per_sample_noise(sample_l2_ball, (idx + 10_000 * (k + 1)).tolist(), N_e, tuple(x.shape[1:]), "cpu", radius=r)
        ev = UniformSmoothed(radius=r, n_samples=N_e, base=bounded)
        h0 = ev.attribute_with_noise(model, x, y, noise).double()
        h1 = ev.attribute_with_noise(model, res.x_adv, y, noise).double()
        cos_att = F.cosine_similarity(h0.flatten(1), h1.flatten(1), dim=1)
        D = 2 * betainc(0.5, (d + 1) / 2, eps**2 / (4 * r * r))
        tol_cert = torch.sqrt(torch.clamp(1 - ((D + 2 * t_e) / h0.flatten(1).norm(dim=1)) ** 2, min=0))
        assert (cos_att >= tol_cert).all()
        assert (cos_att >= cert.cos_lower[:, k] - 1e-3).all()
        worst_gap = min(worst_gap, float((cos_att - cert.cos_lower[:, k]).min()))
        assert res.success.any(), "the attack must actually move the attribution"
    assert worst_gap > -1e-3
