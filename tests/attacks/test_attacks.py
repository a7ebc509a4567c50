"""Attribution attacks: criterion decreases vs clean, labels kept where success, ball ∩ [0,1]."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustattr.attacks import L2AttributionAttack
from robustattr.attacks.core import project
from robustattr.attributions import Saliency, UniformSmoothed
from robustattr.models import SmallCNN, build_model, replace_activation


@pytest.fixture(scope="module")
def softplus_digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small softplus CNN trained briefly on digits, and 6 correctly classified samples."""
    from robustattr.data.digits import load_digits_tensors

    torch.manual_seed(0)
    x, y = load_digits_tensors(28)
    model = replace_activation(build_model(SmallCNN(), (0.3053,), (0.3247,)), nn.Softplus(beta=10.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, 1000, (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    xt, yt = x[1200:1240], y[1200:1240]
    with torch.no_grad():
        ok = model(xt).argmax(1) == yt
    return model, xt[ok][:6].clone(), yt[ok][:6].clone()


def _check_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    n = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (n <= eps * (1 + 1e-5) + 1e-6).all(), n
    assert not x_adv.requires_grad


def _check_labels(model: nn.Module, r, y: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        pred = model(r.x_adv).argmax(1)
    assert (pred[r.success] == y[r.success]).all()


def test_project_l2_and_linf_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 5, 5, generator=g)
    z = x + torch.randn(4, 1, 5, 5, generator=g)
    p = project(z, x, 0.7, "l2")
    assert ((p - x).flatten(1).norm(dim=1) <= 0.7 + 1e-6).all() and p.min() >= 0 and p.max() <= 1
    q = project(z, x, 0.1, "linf")
    ref = torch.minimum(torch.maximum(z, x - 0.1), x + 0.1).clamp(0, 1)  # explicit box projection
    assert torch.allclose(q, ref)


@pytest.mark.parametrize("objective", ["cosine", "euclidean"])
def test_l2_attack_increases_distance(softplus_digits, objective: str) -> None:  # type: ignore[no-untyped-def]
    model, x, y = softplus_digits
    attack = L2AttributionAttack(Saliency(), eps=1.0, steps=8, objective=objective, surrogate_beta=None, seed=0)
    r = attack(model, x, y)
    _check_ball(r.x_adv, x, 1.0, "l2")
    _check_labels(model, r, y)
    # independent recomputation of the reported criterion with plain autograd saliency
    def sal(z: torch.Tensor) -> torch.Tensor:
        z = z.clone().requires_grad_(True)
        (gz,) = torch.autograd.grad(model(z).gather(1, y[:, None]).sum(), z)
        return gz.flatten(1)

    g0, g1 = sal(x), sal(r.x_adv)
    ref = 1 - F.cosine_similarity(g0, g1, dim=1) if objective == "cosine" else (g1 - g0).norm(dim=1)
    assert torch.allclose(r.criterion, ref, atol=1e-5, rtol=1e-4)
    assert r.success.float().mean() >= 0.8
    assert (ref[r.success] > 1e-3).all()  # clean criterion is 0: strictly increased


def test_l2_attack_relu_uses_surrogate_and_smoothed_crn(softplus_digits) -> None:  # type: ignore[no-untyped-def]
    _, x, y = softplus_digits
    torch.manual_seed(1)
    relu = build_model(SmallCNN(), (0.3053,), (0.3247,)).eval()
    with torch.no_grad():
        y = relu(x).argmax(1)
    attr = UniformSmoothed(radius=0.3, n_samples=4, seed=3)
    attack = L2AttributionAttack(attr, eps=0.5, steps=4, objective="euclidean", seed=0)
    seeds = torch.arange(len(x)) + 100
    r = attack(relu, x, y, sample_seeds=seeds)
    _check_ball(r.x_adv, x, 0.5, "l2")
    _check_labels(relu, r, y)
    assert r.success.any()
    # batch invariance with per-sample seeds: the first 2 samples alone give the same result
    r2 = attack(relu, x[:2], y[:2], sample_seeds=seeds[:2])
    assert torch.allclose(r2.criterion, r.criterion[:2], atol=1e-5)
    # the reported criterion is the CRN distance with the per-sample noise draw (independent loop)
    from robustattr.attributions import sample_l2_ball
    from robustattr.utils import per_sample_noise

    noise = per_sample_noise(sample_l2_ball, seeds, 4, tuple(x.shape[1:]), "cpu", radius=0.3)
    def smooth(z: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(z)
        for i in range(4):
            zi = (z + noise[i]).requires_grad_(True)
            (gi,) = torch.autograd.grad(relu(zi).gather(1, y[:, None]).sum(), zi)
            out += gi / 4
        return out
    ref = (smooth(r.x_adv) - smooth(x)).flatten(1).norm(dim=1)
    assert torch.allclose(r.criterion, ref, atol=1e-5, rtol=1e-4)


def test_attack_on_gradient_shap_is_batch_independent(softplus_digits) -> None:  # type: ignore[no-untyped-def]
    """GradientSHAP has no ``_draw``: its per-sample draws come from ``sample_noise(x, generators=...)``."""
    from robustattr.attacks import TopKAttack
    from robustattr.attacks.core import RandomStreams, attribution_noise
    from robustattr.attributions import GradientSHAP
    from robustattr.utils import per_sample_generators

    model, x, y = softplus_digits
    bank = torch.rand(4, *x.shape[1:], generator=torch.Generator().manual_seed(9))
    attr = GradientSHAP(baselines=bank, n_samples=3, sigma=0.1)  # no seed: without per-sample streams, the global RNG
    attack = TopKAttack(attr, eps=0.2, steps=3, step_size=0.05, k=50)
    seeds = torch.arange(len(x)) + 40
    # the draw of each sample is the one its own generator gives (independent call of sample_noise)
    draw = attribution_noise(attr, x, RandomStreams(x, None, seeds))
    ref = attr.sample_noise(x[2:3], generators=per_sample_generators(seeds[2:3].tolist(), x.device))
    assert all(torch.equal(d[:, 2:3], r) for d, r in zip(draw, ref, strict=True))
    whole = attack(model, x, y, sample_seeds=seeds)
    torch.manual_seed(123)  # another global RNG state must not matter
    for rows in (slice(2, 3), slice(1, 5)):  # the sample alone, and in another batch
        part = attack(model, x[rows], y[rows], sample_seeds=seeds[rows])
        torch.testing.assert_close(part.x_adv, whole.x_adv[rows], rtol=0, atol=1e-6)
        torch.testing.assert_close(part.criterion, whole.criterion[rows], rtol=1e-5, atol=1e-6)
        assert torch.equal(part.success, whole.success[rows])
    assert whole.success.any()  # the attack did something, so equal iterates are not trivially the input


def test_misclassified_skipped(softplus_digits) -> None:  # type: ignore[no-untyped-def]
    model, x, y = softplus_digits
    wrong = y.clone()
    wrong[0] = (y[0] + 1) % 10
    r = L2AttributionAttack(Saliency(), eps=1.0, steps=2, seed=0)(model, x[:2], wrong[:2])
    assert r.skipped_misclassified.tolist() == [True, False]
    assert not r.success[0] and torch.equal(r.x_adv[0], x[0])


def test_l2_attack_bad_args() -> None:
    with pytest.raises(ValueError, match="objective"):
        L2AttributionAttack(Saliency(), eps=1.0, objective="l1")
    with pytest.raises(ValueError, match="eps"):
        L2AttributionAttack(Saliency(), eps=0.0)
    with pytest.raises(ValueError, match="restarts"):
        L2AttributionAttack(Saliency(), eps=1.0, restarts=0)


def _np_topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> list[float]:
    import numpy as np

    out = []
    for i in range(a.shape[0]):
        sa = set(np.argsort(-a[i].flatten().numpy(), kind="stable")[:k].tolist())
        sb = set(np.argsort(-b[i].flatten().numpy(), kind="stable")[:k].tolist())
        out.append(len(sa & sb) / k)
    return out


def _saliency_map(model: nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(z).gather(1, y[:, None]).sum(), z)
    return g.abs().sum(1)


@pytest.mark.parametrize("name", ["topk", "lens_topk", "mass_center", "targeted", "random_sign"])
def test_ifia_attacks_improve_criterion(softplus_digits, name: str) -> None:  # type: ignore[no-untyped-def]
    from robustattr.attacks import (
        LENSTopKAttack,
        MassCenterAttack,
        RandomSignAttack,
        TargetedAttack,
        TopKAttack,
    )

    model, x, y = softplus_digits
    x, y = x[:4], y[:4]
    common = dict(eps=0.3, steps=5, surrogate_beta=None)
    attack = {
        "topk": lambda: TopKAttack(Saliency(), step_size=0.06, k=50, **common),
        "lens_topk": lambda: LENSTopKAttack(Saliency(), step_size=0.06, k=50, w=3, **common),
        "mass_center": lambda: MassCenterAttack(Saliency(), step_size=0.06, **common),
        "targeted": lambda: TargetedAttack(Saliency(), step_size=0.06, **common),
        "random_sign": lambda: RandomSignAttack(Saliency(), k=50, seed=0, **common),
    }[name]()
    r = attack(model, x, y)
    _check_ball(r.x_adv, x, 0.3, "linf")
    _check_labels(model, r, y)
    assert not r.skipped_misclassified.any()
    assert r.success.sum() >= 2
    a0, a1 = _saliency_map(model, x, y), _saliency_map(model, r.x_adv, y)
    if name in ("topk", "random_sign"):
        ref = torch.tensor(_np_topk_intersection(a0, a1, 50))
        assert torch.allclose(r.criterion, ref)
        assert (ref[r.success] < 1.0).all()  # clean intersection is 1
    elif name == "lens_topk":
        assert (r.criterion[r.success] < 1.0).all() and (r.criterion[~r.success] == 1.0).all()
    elif name == "mass_center":
        import numpy as np

        def center(m: torch.Tensor) -> np.ndarray:
            ii, jj = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
            m = m.numpy()
            return np.stack([(m * ii).sum((1, 2)), (m * jj).sum((1, 2))], 1) / m.sum((1, 2))[:, None]

        ref = np.linalg.norm(center(a0) - center(a1), axis=1)
        np.testing.assert_allclose(r.criterion.numpy(), ref, rtol=1e-3, atol=1e-3)
        assert (ref[r.success.numpy()] > 0).all()
    else:  # targeted: mass fraction in the default top-left 7×7 box increased
        frac = lambda m: m[:, :7, :7].sum((1, 2)) / m.sum((1, 2))  # noqa: E731
        assert torch.allclose(r.criterion, frac(a1), rtol=1e-4)
        assert (frac(a1)[r.success] > frac(a0)[r.success]).all()


def test_topk_attack_on_relu_model_uses_original_for_criterion(softplus_digits) -> None:  # type: ignore[no-untyped-def]
    from robustattr.attacks import TopKAttack

    _, x, _ = softplus_digits
    torch.manual_seed(2)
    relu = build_model(SmallCNN(), (0.3053,), (0.3247,)).eval()
    with torch.no_grad():
        y = relu(x[:3]).argmax(1)
    r = TopKAttack(Saliency(), eps=0.3, steps=3, step_size=0.1, k=50)(relu, x[:3], y)
    ref = torch.tensor(_np_topk_intersection(_saliency_map(relu, x[:3], y), _saliency_map(relu, r.x_adv, y), 50))
    assert torch.allclose(r.criterion, ref)
    _check_ball(r.x_adv, x[:3], 0.3, "linf")
    _check_labels(relu, r, y)


def test_manipulate_moves_towards_target(softplus_digits) -> None:  # type: ignore[no-untyped-def]
    from robustattr.attacks import ManipulateAttack

    model, x, y = softplus_digits
    x, y = x[:3], y[:3]
    r = ManipulateAttack(Saliency(), steps=8, lr=1e-2, eps=0.2)(model, x, y)
    _check_ball(r.x_adv, x, 0.2, "linf")
    _check_labels(model, r, y)
    # criterion = MSE of sum-normalised maps to the rolled batch's map (independent recomputation)
    norm = lambda m: m / m.sum((1, 2), keepdim=True)  # noqa: E731
    target = norm(_saliency_map(model, x.roll(1, 0), model(x.roll(1, 0)).argmax(1)))
    mse = lambda z: (norm(_saliency_map(model, z, y)) - target).pow(2).mean((1, 2))  # noqa: E731
    assert torch.allclose(r.criterion, mse(r.x_adv), rtol=1e-4)
    assert r.success.any() and (mse(r.x_adv)[r.success] < mse(x)[r.success]).all()
    with pytest.raises(ValueError, match="lr"):
        ManipulateAttack(Saliency(), lr=0.0)


def test_ifia_bad_args() -> None:
    from robustattr.attacks import LENSTopKAttack, TopKAttack

    with pytest.raises(ValueError, match="w must be"):
        LENSTopKAttack(Saliency(), w=2)
    with pytest.raises(ValueError, match="k must be"):
        TopKAttack(Saliency(), k=0)
    with pytest.raises(ValueError, match="norm"):
        TopKAttack(Saliency(), norm="l1")
    with pytest.raises(ValueError, match="k must be"):
        TopKAttack(Saliency(), k=10_000, steps=1)(build_model(SmallCNN(), (0.3,), (0.3,)).eval(), torch.rand(1, 1, 28, 28), torch.tensor([0]))
