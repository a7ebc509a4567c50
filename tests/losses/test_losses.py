"""Robust objectives: each targeted quantity against an independent reference (explicit loops,
F.kl_div, Captum IG, exact Hessians), inner-maximisation sanity, training effect, contract."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustattr.losses as losses
from robustattr.attacks.pgd import draw_noise, project
from robustattr.losses import (
    ARTLoss,
    IGNormLoss,
    IGRLoss,
    PGDAdversarialLoss,
    SSRLoss,
    StandardLoss,
    TRADESLoss,
)
from robustattr.losses.art import pos_neg_gradients, top_k_pixel_mask, triplet_per_sample
from robustattr.losses.common import cosine_gap, kl_per_sample, label_ig
from robustattr.losses.ssr import ce_hessian_lambda_max, logit_jacobian
from robustattr.models import SmallCNN, build_model, softplus_surrogate


def _tiny(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(SmallCNN(width=4, hidden=32), (0.3,), (0.3,)).to(dtype)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    from robustattr.data.digits import load_digits_tensors

    x, y = load_digits_tensors(28)
    return x[:64].clone(), y[:64].clone()


@pytest.fixture(scope="module")
def tiny_trained(data) -> nn.Module:
    """Tiny SmallCNN trained 40 Adam steps on 64 digits (non-trivial logits), train mode."""
    x, y = data
    model = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture
def batch(data) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data
    return x[:4].clone(), y[:4].clone()


# ----------------------------------------------------------------------------- targeted quantities
def test_pgd_at_ce_is_ce_at_attack_point(tiny_trained, batch) -> None:
    x, y = batch
    loss = PGDAdversarialLoss(eps=0.2, step_size=0.05, steps=4, noise_seed=1)
    out = loss(tiny_trained, x, y)
    x_adv = loss.attack(tiny_trained, x, y)
    with torch.no_grad():
        ref = F.cross_entropy(tiny_trained(x_adv), y)
    torch.testing.assert_close(out.terms["ce"], ref)
    torch.testing.assert_close(out.loss.detach(), ref)


def test_trades_kl_equals_f_kl_div(tiny_trained, batch) -> None:
    x, y = batch
    loss = TRADESLoss(beta=2.5, eps=0.2, step_size=0.05, steps=4, noise_seed=2)
    out = loss(tiny_trained, x, y)
    x_adv = loss.inner(tiny_trained, x)
    with torch.no_grad():
        clean, adv = tiny_trained(x), tiny_trained(x_adv)
        kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
        ce = F.cross_entropy(clean, y)
    assert kl > 1e-4  # the attack moved the prediction
    torch.testing.assert_close(out.terms["kl"], kl)
    torch.testing.assert_close(out.loss.detach(), ce + 2.5 * kl)
    torch.testing.assert_close(out.logits, clean)


@pytest.mark.parametrize(
    "make,calls",
    [
        # probe = p(x) of the ascent, 3 ascent steps, separate forwards at x and x'
        (lambda: TRADESLoss(eps=0.2, step_size=0.05, steps=3), [4, 4, 4, 4, 4, 4]),
        # the same, then IG of [x; x'] with 3 points folded into one forward of 2·3·B rows
        (lambda: losses.TRADESIGRLoss(eps=0.2, step_size=0.05, steps=2, ig_steps=3), [4, 4, 4, 4, 4, 24]),
    ],
)
def test_trades_clean_forward_serves_probe_and_ascent(make, calls: list[int], batch) -> None:
    """One eval-mode forward at x is both the input check and p(x) of the KL ascent (no second one)."""
    x, y = batch
    model = _tiny().train()
    rows: list[int] = []
    handle = model.register_forward_hook(lambda _m, inp, _out: rows.append(int(inp[0].shape[0])))
    try:
        make()(model, x, y)
    finally:
        handle.remove()
    assert rows == calls


def _loss_ig_l1_loop(model: nn.Module, x: torch.Tensor, xs: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """‖IGᴸ(x_i, x*_i)‖₁ with one backward per sample and path point."""
    vals = []
    for i in range(x.shape[0]):
        acc = torch.zeros_like(x[i])
        for k in range(1, m + 1):
            z = (x[i] + (k / m) * (xs[i] - x[i])).unsqueeze(0).requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(z), y[i : i + 1]), z)
            acc += g[0]
        vals.append(((xs[i] - x[i]) * acc / m).abs().sum())
    return torch.stack(vals)


@pytest.mark.parametrize("sum_norm", [False, True])
def test_ig_norm_term_equals_explicit_loop(tiny_trained, batch, sum_norm: bool) -> None:
    x, y = batch
    loss = IGNormLoss(lam=0.7, beta=0.3, sum_norm=sum_norm, eps=0.2, step_size=0.05, steps=2, ig_steps=10, approx=5, noise_seed=3)
    out = loss(tiny_trained, x, y)
    xs = loss.attack(tiny_trained, x, y)
    ref = _loss_ig_l1_loop(tiny_trained, x, xs, y, 10).mean()
    assert ref > 0
    torch.testing.assert_close(out.terms["ig_norm"], ref, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        ce = F.cross_entropy(tiny_trained(xs if sum_norm else x), y)
    torch.testing.assert_close(out.terms["ce"], ce)
    torch.testing.assert_close(out.loss.detach(), ce + (0.3 if sum_norm else 0.7) * ref, rtol=1e-4, atol=1e-7)


class _ReLUMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_ssr_lambda_max_equals_top_eigenvalue_of_exact_hessian() -> None:
    model = _ReLUMLP()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 2, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    ref = []
    for i in range(5):
        H = torch.autograd.functional.hessian(lambda z: F.cross_entropy(model(z.view(1, 1, 2, 3)), y[i : i + 1]), x[i].flatten())
        ref.append(torch.linalg.eigvalsh(H)[-1])
    ref_t = torch.stack(ref)
    assert (ref_t > 1e-6).all()
    logits = model(x)
    per_sample = ce_hessian_lambda_max(logit_jacobian(model, x, 4), logits)
    torch.testing.assert_close(per_sample, ref_t, rtol=1e-9, atol=1e-12)
    out = SSRLoss(beta=0.3, scale=15.0)(model, x, y)
    torch.testing.assert_close(out.terms["lambda_max"], ref_t.mean())
    torch.testing.assert_close(out.loss.detach(), 0.7 * F.cross_entropy(logits, y).detach() + 0.3 * 15.0 * ref_t.mean())


def test_ssr_gradient_finite_with_tied_probabilities() -> None:
    """Uniform p (tied eigenvalues of diag(p) − ppᵀ): the closed-form factor keeps gradients finite."""
    model = _ReLUMLP()
    with torch.no_grad():
        model.net[-1].weight.zero_()
        model.net[-1].bias.zero_()
        model.net[-1].weight[0, 0] = 1e-3
    x = torch.rand(3, 1, 2, 3, dtype=torch.float64)
    out = SSRLoss()(model, x, torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def test_art_triplet_equals_direct_loop(tiny_trained, batch) -> None:
    # float64: in float32 the batched and the per-row passes round differently, and one clean sample sits within
    # rounding of a kink (ReLU sign or max-pool argmax), so its saliency differs by 2 %; in float64 they agree to 1e-16
    import copy

    model = copy.deepcopy(tiny_trained).double()
    x, y = batch
    x = x.double()
    B = x.shape[0]
    loss = ARTLoss(triplet_weight=0.5, eps=0.1, step_size=0.05, steps=2)
    out = loss(model, x, y)
    x_adv = loss.attack(model, x, y)
    X = torch.cat([x, x_adv])
    Y = torch.cat([y, y])
    pos, neg = [], []
    for r in range(2 * B):
        z = X[r : r + 1].clone().requires_grad_(True)
        logits = model(z)[0]
        (gp,) = torch.autograd.grad(logits[Y[r]], z)
        others = [c for c in range(logits.shape[0]) if c != int(Y[r])]
        c_star = max(others, key=lambda c: float(logits[c].detach()))
        z2 = X[r : r + 1].clone().requires_grad_(True)
        (gn,) = torch.autograd.grad(model(z2)[0, c_star], z2)
        pos.append(gp[0].flatten())
        neg.append(gn[0].flatten())
    vals = []
    for i in range(B):
        pair = [i, B + i]
        for a in pair:
            anchor = X[a].flatten()
            d_ap = max(1 - _cos(anchor, pos[j]) for j in pair)
            d_an = min(1 - _cos(anchor, neg[j]) for j in pair)
            vals.append(F.softplus(d_ap - d_an))
    ref = torch.stack(vals).mean()
    torch.testing.assert_close(out.terms["triplet"], ref.detach(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        ce = F.cross_entropy(model(x_adv), y)
    torch.testing.assert_close(out.terms["ce"], ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss.detach(), ce + 0.5 * ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base", ["ce", "trades"])
def test_igr_cos_gap_equals_captum_ig(tiny_trained, batch, base: str) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    x, y = batch
    loss = IGRLoss(lam=0.8, base=base, beta=1.5, eps=0.2, step_size=0.05, steps=2, ig_steps=8, inner_ig_steps=4, noise_seed=5)
    out = loss(tiny_trained, x, y)
    x_adv = loss.attack(tiny_trained, x, y)
    ig = CaptumIG(tiny_trained)
    a = ig.attribute(x, baselines=0.0, target=y, n_steps=8, method="riemann_right")
    b = ig.attribute(x_adv, baselines=0.0, target=y, n_steps=8, method="riemann_right")
    gap = torch.stack([1 - _cos(a[i].flatten(), b[i].flatten()) for i in range(x.shape[0])]).mean()
    torch.testing.assert_close(out.terms["cos_gap"], gap, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        clean, adv = tiny_trained(x), tiny_trained(x_adv)
        total = F.cross_entropy(clean, y) + 0.8 * gap
        if base == "trades":
            kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
            torch.testing.assert_close(out.terms["kl"], kl)
            total = total + 1.5 * kl
    torch.testing.assert_close(out.loss.detach(), total, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- inner maximisations
def _inner_cases(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """(name, start, result, objective, eps, norm) for every inner maximisation."""
    cases = []
    pgd = PGDAdversarialLoss(eps=0.2, step_size=0.05, steps=5, noise_seed=7)
    start = project(pgd.attack.start(x), x, 0.2, "linf")
    cases.append(("pgd", start, pgd.attack(model, x, y), lambda z: F.cross_entropy(model(z), y, reduction="none"), 0.2, "linf"))

    tr = TRADESLoss(eps=0.2, step_size=0.05, steps=5, noise_seed=7)
    start = project(x + draw_noise(x, "gaussian", 0.001, 7), x, 0.2, "linf")
    with torch.no_grad():
        clean = model(x)
    cases.append(("trades", start, tr.inner(model, x), lambda z: kl_per_sample(clean, model(z)), 0.2, "linf"))

    for sum_norm in (False, True):
        ign = IGNormLoss(sum_norm=sum_norm, eps=0.2, step_size=0.05, steps=3, ig_steps=10, approx=5, noise_seed=7)
        sur = softplus_surrogate(model, 10.0)
        start = project(x + draw_noise(x, "linf", 0.2, 7), x, 0.2, "linf")
        cases.append((f"ignorm-sum{sum_norm}", start, ign.attack(model, x, y),
                      lambda z, ign=ign, sur=sur: ign.inner_objective(sur, x, z, y), 0.2, "linf"))

    art = ARTLoss(eps=0.1, step_size=0.05, steps=3)
    sur50 = softplus_surrogate(model, 50.0)
    pos_c, neg_c, _ = pos_neg_gradients(sur50, x, y)
    mask = top_k_pixel_mask(pos_c, 1000)

    def art_obj(z: torch.Tensor) -> torch.Tensor:
        pa, na, _ = pos_neg_gradients(sur50, z, y)
        return triplet_per_sample(x, z, pos_c, pa, neg_c, na, mask)

    cases.append(("art", x.clone(), art.attack(model, x, y), art_obj, 0.1, "linf"))

    igr = IGRLoss(eps=0.2, step_size=0.05, steps=3, inner_ig_steps=4, noise_seed=7)
    sur10 = softplus_surrogate(model, 10.0)
    ig_x = label_ig(sur10, x, y, 4, False)
    start = project(x + draw_noise(x, "linf", 0.2, 7), x, 0.2, "linf")
    cases.append(("igr-attribution", start, igr.attack(model, x, y), lambda z: cosine_gap(ig_x, label_ig(sur10, z, y, 4, False)), 0.2, "linf"))

    igr_l2 = IGRLoss(base="trades", norm="l2", eps=1.0, step_size=0.25, steps=4, noise_seed=7)
    start = project(x + draw_noise(x, "gaussian", 0.001, 7), x, 1.0, "l2")
    cases.append(("trades-igr-l2", start, igr_l2.attack(model, x, y), lambda z: kl_per_sample(clean, model(z)), 1.0, "l2"))
    return cases


def test_inner_maximisations_increase_objective_and_stay_in_ball(tiny_trained, data) -> None:
    x, y = data[0][:8].clone(), data[1][:8].clone()
    model = tiny_trained
    model.train()
    for name, start, result, objective, eps, norm in _inner_cases(model, x, y):
        assert model.training, name  # mode restored
        assert not result.requires_grad, name
        assert result.min() >= 0 and result.max() <= 1, name
        d = (result - x).flatten(1)
        dist = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (dist <= eps + 1e-6).all(), name
        with torch.no_grad(), torch.enable_grad():
            model.eval()
            before, after = objective(start).detach(), objective(result).detach()
            model.train()
        assert after.mean() > before.mean(), (name, before, after)


# ----------------------------------------------------------------------------- training effect
_TRAIN_CASES = {
    "pgd": (lambda: PGDAdversarialLoss(eps=0.2, step_size=0.05, steps=3, noise_seed=0), "ce", 2e-3),
    "trades": (lambda: TRADESLoss(beta=6.0, eps=0.2, step_size=0.05, steps=3, noise_seed=0), "kl", 2e-3),
    "ignorm": (lambda: IGNormLoss(lam=5.0, eps=0.2, step_size=0.05, steps=1, ig_steps=5, approx=5, noise_seed=0), "ig_norm", 2e-3),
    "igsumnorm": (lambda: IGNormLoss(beta=5.0, sum_norm=True, eps=0.2, step_size=0.05, steps=1, ig_steps=5, approx=5, noise_seed=0), "ig_norm", 2e-3),
    "art": (lambda: ARTLoss(triplet_weight=20.0, eps=0.1, step_size=0.05, steps=1), "triplet", 2e-3),
    "igr": (lambda: IGRLoss(lam=5.0, eps=0.2, step_size=0.05, steps=1, ig_steps=4, inner_ig_steps=2, noise_seed=0), "cos_gap", 2e-3),
    "trades_igr": (lambda: IGRLoss(lam=5.0, base="trades", eps=0.2, step_size=0.05, steps=2, ig_steps=4, noise_seed=0), "cos_gap", 2e-3),
    "ssr": (lambda: SSRLoss(beta=0.9, scale=15.0), "lambda_max", 5e-4),  # curvature is stiff: small lr
}


def _train(model: nn.Module, loss, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    model = copy.deepcopy(model).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss(model, x, y).loss.backward()
        opt.step()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_TRAIN_CASES))
def test_training_lowers_targeted_term_vs_standard(tiny_trained, data, name: str) -> None:
    make, term, lr = _TRAIN_CASES[name]
    x, y = data[0][:16], data[1][:16]
    standard = _train(tiny_trained, StandardLoss(), x, y, 8, lr)  # same init, data, optimiser and lr
    robust = _train(tiny_trained, make(), x, y, 8, lr)
    probe = make()
    xe, ye = data[0][32:48], data[1][32:48]
    t_std = probe(standard.eval(), xe, ye).terms[term]
    t_rob = probe(robust.eval(), xe, ye).terms[term]
    assert t_rob < t_std, (name, float(t_rob), float(t_std))


# ----------------------------------------------------------------------------- contract
_CHEAP = {
    "StandardLoss": {},
    "PGDAdversarialLoss": {"steps": 2, "step_size": 0.1},
    "TRADESLoss": {"steps": 2, "step_size": 0.1},
    "IGNormLoss": {"steps": 1, "ig_steps": 5, "approx": 5},
    "ARTLoss": {"steps": 1},
    "IGRLoss": {"steps": 1, "ig_steps": 3, "inner_ig_steps": 2},
    "SSRLoss": {},
    "IGSumNormLoss": {"steps": 1, "ig_steps": 5, "approx": 5},
    "TRADESIGRLoss": {"steps": 1, "ig_steps": 3},
}


@pytest.mark.parametrize("name", [n for n in losses.__all__ if n not in ("LossOutput", "RobustLoss")])
def test_contract_every_exported_loss(name: str, batch) -> None:
    assert name in _CHEAP, f"add a cheap configuration of {name} to the contract test"
    x, y = batch
    x0, y0 = x.clone(), y.clone()
    model = _tiny().train()
    loss = getattr(losses, name)(**_CHEAP[name])
    assert isinstance(loss, losses.RobustLoss)
    out = loss(model, x, y)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.terms and all(t.dim() == 0 and not t.requires_grad and torch.isfinite(t) for t in out.terms.values())
    if out.logits is not None:
        assert out.logits.shape == (x.shape[0], 10) and not out.logits.requires_grad
    out.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert torch.equal(x, x0) and torch.equal(y, y0) and x.grad is None
    assert model.training and all(m.training for m in model.modules())
    assert name in repr(loss)


@pytest.mark.parametrize(
    "cls,kwargs,param",
    [
        (PGDAdversarialLoss, {"eps": 0.0}, "eps"),
        (PGDAdversarialLoss, {"steps": 0}, "steps"),
        (PGDAdversarialLoss, {"norm": "l3"}, "norm"),
        (TRADESLoss, {"beta": -1.0}, "beta"),
        (TRADESLoss, {"eps": -0.1}, "eps"),
        (TRADESLoss, {"norm": "inf"}, "norm"),
        (IGNormLoss, {"lam": -1.0}, "lam"),
        (IGNormLoss, {"beta": -0.1}, "beta"),
        (IGNormLoss, {"ig_steps": 50, "approx": 7}, "approx"),
        (IGNormLoss, {"steps": 0}, "steps"),
        (ARTLoss, {"triplet_weight": -1.0}, "triplet_weight"),
        (ARTLoss, {"eps": 0.0}, "eps"),
        (ARTLoss, {"top_k": 0}, "top_k"),
        (IGRLoss, {"lam": -1.0}, "lam"),
        (IGRLoss, {"base": "pgd"}, "base"),
        (IGRLoss, {"inner": "ce"}, "inner"),
        (IGRLoss, {"beta": -1.0}, "beta"),
        (SSRLoss, {"beta": 1.5}, "beta"),
        (SSRLoss, {"scale": 0.0}, "scale"),
    ],
)
def test_invalid_hyperparameters_raise_at_construction(cls, kwargs: dict, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        cls(**kwargs)
