"""Attributions against independent references: Captum, closed forms, scipy KS, finite differences."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from scipy import stats
from torch import Tensor, nn

from robustattr.attributions import (
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    UniformSmoothed,
    attribution_map,
    sample_l2_ball,
    sample_linf_cube,
)
from robustattr.models import SmallCNN, TimmBackbone, build_model, replace_activation

captum_attr = pytest.importorskip("captum.attr")  # dev dependency: the reference implementation


def _smallcnn(pool: str = "max") -> tuple[nn.Module, Tensor, Tensor]:
    from robustattr.data import load_digits_tensors

    torch.manual_seed(0)
    model = build_model(SmallCNN(pool=pool), (0.3053,), (0.3247,)).eval()
    x, y = load_digits_tensors(28)
    return model, x[:4].clone(), y[:4].clone()


def _resnet18() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = build_model(TimmBackbone("resnet18", num_classes=10, cifar_stem=True), (0.5,) * 3, (0.25,) * 3).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(2, 3, 16, 16, generator=g), torch.tensor([3, 7])


MODELS = {"smallcnn": _smallcnn, "resnet18": _resnet18}


def _assert_close_to_scale(ours: Tensor, ref: Tensor, rel: float = 1e-5) -> None:
    """``max |ours − ref| ≤ rel · max |ref|`` (atol relative to the attribution's scale)."""
    scale = ref.abs().max()
    assert scale > 0
    err = (ours - ref).abs().max()
    assert err <= rel * scale, f"max error {float(err):.3e} > {rel} x scale {float(scale):.3e}"


# --------------------------------------------------------------------------- Captum


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["saliency", "ixg", "ig_right", "ig_trapezoid"])
def test_matches_captum(name: str, method: str) -> None:
    model, x, y = MODELS[name]()
    m = 8
    if method == "saliency":
        ours = Saliency()(model, x, y)
        ref = captum_attr.Saliency(model).attribute(x.clone(), target=y, abs=False)
    elif method == "ixg":
        ours = InputXGradient()(model, x, y)
        ref = captum_attr.InputXGradient(model).attribute(x.clone(), target=y)
    else:
        rule = "riemann_right" if method == "ig_right" else "riemann_trapezoid"
        # Trapezoid evaluates the baseline itself: a non-constant one avoids max-pool ties that
        # float rounding (batch-position dependent) could break differently in the two codes.
        baseline: float | Tensor = 0.0
        if method == "ig_trapezoid":
            baseline = 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
        ours = IntegratedGradients(steps=m, baseline=baseline, method=rule, internal_batch_size=3 * x.shape[0])(model, x, y)
        ref = captum_attr.IntegratedGradients(model).attribute(
            x.clone(), baselines=baseline, target=y, n_steps=m, method=rule
        )
    assert ours.shape == x.shape
    if method == "ig_trapezoid":
        # Captum's trapezoid uses step 1/m with halved end weights (weights sum to (m-1)/m);
        # robustattr uses the normalised trapezoid rule, step 1/(m-1) (weights sum to 1, so
        # completeness holds). Same nodes, so the two differ by exactly the factor (m-1)/m.
        ours = ours * (m - 1) / m
    _assert_close_to_scale(ours, ref.detach())


class _Recorder(nn.Module):
    """Forward wrapper that records every input Captum feeds the model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []  # type: ignore[var-annotated]

    def forward(self, z: Tensor) -> Tensor:
        self.seen.append(z.detach().clone())
        return self.model(z)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("base", ["saliency", "ixg"])
def test_smoothgrad_matches_captum_noise_tunnel_same_noise(name: str, base: str) -> None:
    model, x, y = MODELS[name]()
    n, k, sigma = 6, 4, 0.1  # nt_samples_batch_size=4 → two Captum calls (4 + 2 draws)
    rec = _Recorder(model)
    inner = captum_attr.Saliency(rec) if base == "saliency" else captum_attr.InputXGradient(rec)
    torch.manual_seed(123)
    kw = {"abs": False} if base == "saliency" else {}
    ref = captum_attr.NoiseTunnel(inner).attribute(
        x.clone(), nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=y, nt_samples_batch_size=k, **kw
    )
    # Captum orders each call's rows sample-major (repeat_interleave): row i*k_c + j is draw j of sample i.
    B = x.shape[0]
    cols = [z.view(B, z.shape[0] // B, *x.shape[1:]) for z in rec.seen]
    noise = (torch.cat(cols, dim=1) - x.unsqueeze(1)).transpose(0, 1).contiguous()  # [n, B, C, H, W]
    assert noise.shape[0] == n
    g0 = Saliency() if base == "saliency" else InputXGradient()
    ours = SmoothGrad(sigma=sigma, n_samples=n, base=g0).attribute_with_noise(model, x, y, noise)
    _assert_close_to_scale(ours, ref.detach())
    # and the captured noise really is N(0, σ²): a loose sanity check on its spread
    assert abs(float(noise.std()) - sigma) < 0.1 * sigma


# --------------------------------------------------------------------------- analytic oracles


#: The only parameter an input gradient never depends on (build_model → Sequential(Normalize, SmallCNN)).
FINAL_BIAS = "1.classifier.5.bias"


def _softplus_cnn(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    net = build_model(SmallCNN(width=8, hidden=32), (0.3,), (0.3,))
    return replace_activation(net, nn.Softplus(beta=5.0)).to(dtype).eval()


def test_ig_completeness_within_one_percent_at_300_steps() -> None:
    model = _softplus_cnn()
    from robustattr.data import load_digits_tensors

    x = load_digits_tensors(28)[0][:4].double()
    with torch.no_grad():
        delta_all = model(x) - model(torch.zeros_like(x))  # [B, K]
    y = delta_all.abs().argmax(dim=1)  # the class whose logit moves most: a non-degenerate check
    delta = delta_all.gather(1, y[:, None]).squeeze(1)
    ig = IntegratedGradients(steps=300, internal_batch_size=400)(model, x, y)
    total = ig.flatten(1).sum(1)
    assert torch.all((total - delta).abs() <= 0.01 * delta.abs()), (total, delta)


def _linear() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    lin = nn.Linear(2 * 5 * 5, 4).double()
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(3, 2, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 3, 1])
    w_y = lin.weight.detach()[y].view(3, 2, 5, 5)
    return model, x, y, w_y


def test_linear_closed_forms() -> None:
    model, x, y, w_y = _linear()
    torch.testing.assert_close(Saliency()(model, x, y), w_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(InputXGradient()(model, x, y), x * w_y, rtol=0, atol=1e-12)
    for rule in ("riemann_right", "riemann_trapezoid", "riemann_middle", "riemann_left"):
        torch.testing.assert_close(IntegratedGradients(steps=7, method=rule)(model, x, y), x * w_y, rtol=0, atol=1e-12)
    b = torch.full_like(x, 0.3)
    torch.testing.assert_close(IntegratedGradients(steps=5, baseline=b)(model, x, y), (x - b) * w_y, rtol=0, atol=1e-12)
    # smoothing a constant gradient changes nothing
    torch.testing.assert_close(SmoothGrad(sigma=0.2, n_samples=3, seed=0)(model, x, y), w_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(UniformSmoothed(radius=0.5, n_samples=3, seed=0)(model, x, y), w_y, rtol=0, atol=1e-12)
    assert attribution_map(w_y).shape == (3, 5, 5)
    torch.testing.assert_close(attribution_map(w_y), w_y.abs().sum(1))


def test_quadratic_model_ig_closed_form() -> None:
    """f_y(x) = ½ xᵀ A_y x: saliency = A_y x; IG (right Riemann, zero baseline) = x ⊙ A_y x · (m+1)/(2m)."""
    torch.manual_seed(0)
    d, K = 6, 3
    A = torch.randn(K, d, d, dtype=torch.float64)
    A = A + A.transpose(1, 2)

    class Quad(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            v = x.flatten(1)
            return 0.5 * torch.einsum("bi,kij,bj->bk", v, A, v)

    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    ax = torch.einsum("bij,bj->bi", A[y], x.flatten(1)).view_as(x)
    torch.testing.assert_close(Saliency()(Quad(), x, y), ax)
    m = 10
    torch.testing.assert_close(IntegratedGradients(steps=m)(Quad(), x, y), x * ax * (m + 1) / (2 * m))
    torch.testing.assert_close(IntegratedGradients(steps=m, method="riemann_trapezoid")(Quad(), x, y), x * ax / 2)


# --------------------------------------------------------------------------- differentiability


def _all_attributions() -> dict[str, Callable[[], object]]:
    return {
        "saliency": lambda: Saliency(),
        "ixg": lambda: InputXGradient(),
        "ig": lambda: IntegratedGradients(steps=4),
        "ig_trapezoid_chunked": lambda: IntegratedGradients(steps=4, method="riemann_trapezoid", internal_batch_size=3),
        "smoothgrad": lambda: SmoothGrad(sigma=0.1, n_samples=3, seed=0),
        "uniform_l2": lambda: UniformSmoothed(radius=0.5, n_samples=3, ball="l2", seed=0),
        "uniform_linf": lambda: UniformSmoothed(radius=0.05, n_samples=3, ball="linf", base=InputXGradient(), seed=0),
    }


@pytest.mark.parametrize("key", list(_all_attributions()))
def test_create_graph_gradients_reach_every_parameter(key: str) -> None:
    model = _softplus_cnn(torch.float32)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2])
    g = _all_attributions()[key]()(model, x, y, create_graph=True)  # type: ignore[operator]
    loss = g.pow(2).sum()
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for (name, _), gr in zip(model.named_parameters(), grads, strict=True):
        if name == FINAL_BIAS:
            # ∇_x f_y does not depend on the last layer's bias: its gradient is exactly zero,
            # which autograd reports as "unused" (None).
            assert gr is None or torch.all(gr == 0)
            continue
        assert gr is not None, f"no gradient for {name}"
        assert torch.isfinite(gr).all(), name
        assert gr.abs().sum() > 0, f"zero gradient for {name} on a softplus network"


def test_create_graph_on_relu_network_gives_non_none_gradients() -> None:
    model, x, y = _smallcnn()
    g = IntegratedGradients(steps=3)(model, x[:2], y[:2], create_graph=True)
    model.zero_grad()
    g.abs().sum().backward()
    for name, p in model.named_parameters():
        if name != FINAL_BIAS:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_gradient_wrt_x_matches_finite_differences() -> None:
    """d/dx Σ Saliency(x) (= H(x)·1) and d/dx Σ IG(x) against central differences in float64."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Softplus(beta=2.0), nn.Linear(5, 3)).double()
    x0 = torch.rand(2, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 2])
    for attr in (Saliency(), IntegratedGradients(steps=5), InputXGradient()):
        x = x0.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(attr(model, x, y, create_graph=True).sum(), x)
        fd = torch.zeros_like(x0)
        h = 1e-6
        for idx in range(x0.numel()):
            e = torch.zeros(x0.numel(), dtype=torch.float64)
            e[idx] = h
            e = e.view_as(x0)
            fd.view(-1)[idx] = (attr(model, x0 + e, y).sum() - attr(model, x0 - e, y).sum()) / (2 * h)
        torch.testing.assert_close(gx, fd, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- side effects, chunking


@pytest.mark.parametrize("key", list(_all_attributions()))
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_no_side_effects(key: str, training: bool, requires_grad: bool) -> None:
    torch.manual_seed(0)
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).train(training)
    x = torch.rand(2, 1, 28, 28)
    x_before = x.clone()
    if requires_grad:
        x.requires_grad_(True)
        x.grad = torch.full_like(x, 7.0)
    attr = _all_attributions()[key]()
    g = attr(model, x, torch.tensor([0, 1]))  # type: ignore[operator]
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert torch.equal(x.detach(), x_before)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    if requires_grad:
        assert torch.equal(x.grad, torch.full_like(x, 7.0))
    else:
        assert x.grad is None and not x.requires_grad


def test_chunked_equals_unchunked() -> None:
    # Average pooling: with max pooling, near-zero IG path points make window entries tie and the
    # backward routes the gradient to whichever entry the (batch-size dependent) convolution
    # kernel rounds highest, so chunking would change the result for reasons unrelated to it.
    model, x, y = _smallcnn(pool="avg")
    full = IntegratedGradients(steps=10)(model, x, y)
    for chunk in (1, 7, 13, 40):
        _assert_close_to_scale(IntegratedGradients(steps=10, internal_batch_size=chunk)(model, x, y), full)
    for cls, kw in ((SmoothGrad, {"sigma": 0.1}), (UniformSmoothed, {"radius": 1.0})):
        a = cls(n_samples=5, seed=4, **kw)(model, x, y)
        b = cls(n_samples=5, seed=4, internal_batch_size=3, **kw)(model, x, y)
        _assert_close_to_scale(b, a)


def test_smoothed_noise_is_seeded_and_averaged_explicitly() -> None:
    """SmoothGrad = explicit loop mean of saliency at x + noise[i] (same noise)."""
    model, x, y = _smallcnn()
    sg = SmoothGrad(sigma=0.1, n_samples=4, generator=torch.Generator().manual_seed(9))
    noise = sg.sample_noise(x)
    assert noise.shape == (4, *x.shape)
    from robustattr.utils import range_check

    with range_check(False):  # the noisy copies leave [0, 1]; the reference evaluates them one by one
        ref = torch.stack([Saliency()(model, x + noise[i], y) for i in range(4)]).mean(0)
    _assert_close_to_scale(sg.attribute_with_noise(model, x, y, noise), ref)
    a = SmoothGrad(sigma=0.1, n_samples=4, seed=2)(model, x, y)
    b = SmoothGrad(sigma=0.1, n_samples=4, seed=2)(model, x, y)
    assert torch.equal(a, b)


def test_invalid_hyperparameters_raise() -> None:
    for make, word in (
        (lambda: IntegratedGradients(steps=0), "steps"),
        (lambda: IntegratedGradients(method="simpson"), "method"),
        (lambda: IntegratedGradients(internal_batch_size=0), "internal_batch_size"),
        (lambda: SmoothGrad(sigma=0.0), "sigma"),
        (lambda: SmoothGrad(n_samples=0), "n_samples"),
        (lambda: UniformSmoothed(radius=-1.0), "radius"),
        (lambda: UniformSmoothed(ball="l3"), "ball"),
    ):
        with pytest.raises(ValueError, match=word):
            make()


# --------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("shape", [(3,), (1, 4, 4), (3, 8, 8)])
def test_l2_ball_sampler_radial_cdf_and_mean(shape: tuple[int, ...]) -> None:
    r, n = 0.7, 4000
    d = math.prod(shape)
    eta = sample_l2_ball(n, shape, r, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert eta.shape == (n, *shape)
    norms = eta.flatten(1).norm(dim=1)
    assert float(norms.max()) <= r * (1 + 1e-12)
    # P(‖η‖ ≤ ρ) = (ρ/r)^d
    assert stats.kstest(norms.numpy() / r, lambda t: t**d).pvalue > 1e-3
    # the test has power: the radius law of a non-uniform sampler (U instead of U^{1/d}) is rejected
    if d > 1:
        assert stats.kstest(torch.rand(n, generator=torch.Generator().manual_seed(0)).numpy(), lambda t: t**d).pvalue < 1e-6
    # mean ≈ 0: each coordinate has variance r²/(d+2); allow 5 standard errors
    se = r / math.sqrt(d + 2) / math.sqrt(n)
    assert float(eta.flatten(1).mean(0).abs().max()) < 5 * se


def test_linf_cube_sampler() -> None:
    r, n = 0.3, 4000
    eta = sample_linf_cube(n, (2, 3), r, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert eta.shape == (n, 2, 3) and float(eta.abs().max()) <= r
    # each coordinate is U(-r, r)
    assert stats.kstest(eta[:, 0, 0].numpy(), stats.uniform(loc=-r, scale=2 * r).cdf).pvalue > 1e-3
    assert float(eta.flatten(1).mean(0).abs().max()) < 5 * r / math.sqrt(3 * n)
