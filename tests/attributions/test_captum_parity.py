"""New attributions against Captum on the same inputs, noise and baselines (captured from Captum).

Covers VarGrad and SmoothGrad² (NoiseTunnel ``vargrad``/``smoothgrad_sq``), Gauss–Legendre IG,
GradientSHAP, Guided Backprop, Grad-CAM (LayerGradCam + LayerAttribution.interpolate) and
the Captum adapter, on SmallCNN (digits 28×28) and a timm resnet18 (CIFAR stem, 8×8 inputs: every
stage still runs, at a CPU-test cost), plus
differentiability, side effects, per-sample baselines inside the smoothing wrappers and
per-sample seeded draws.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from robustattr import registry
from robustattr.attributions import (
    Attribution,
    CaptumAttribution,
    GradCAM,
    GradientSHAP,
    GradientSHAPDraw,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    SmoothGradSquared,
    UniformSmoothed,
    VarGrad,
)
from robustattr.data import load_digits_tensors
from robustattr.models import SmallCNN, TimmBackbone, build_model, replace_activation
from robustattr.utils import per_sample_generators

captum_attr = pytest.importorskip("captum.attr")  # dev dependency: the reference implementation
gradient_shap_module = pytest.importorskip("captum.attr._core.gradient_shap")


def _smallcnn() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = build_model(SmallCNN(), (0.3053,), (0.3247,)).eval()
    x, y = load_digits_tensors(28)
    return model, x[:4].clone(), y[:4].clone()


def _resnet18() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = build_model(TimmBackbone("resnet18", num_classes=10, cifar_stem=True), (0.5,) * 3, (0.25,) * 3).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(2, 3, 8, 8, generator=g), torch.tensor([3, 7])


MODELS = {"smallcnn": _smallcnn, "resnet18": _resnet18}
#: Grad-CAM layers: SmallCNN's last convolution, resnet18's third stage (2×2 maps at 8×8 inputs).
CAM_LAYER = {"smallcnn": "1.features.7", "resnet18": "1.net.layer3"}


def _assert_close_to_scale(ours: Tensor, ref: Tensor, rel: float = 1e-5) -> None:
    """``max |ours − ref| ≤ rel · max |ref|``."""
    scale = ref.abs().max()
    assert scale > 0
    err = (ours - ref).abs().max()
    assert err <= rel * scale, f"max error {float(err):.3e} > {rel} x scale {float(scale):.3e}"


class _NoiseRecorder:
    """Records every noisy batch NoiseTunnel builds (``input.repeat_interleave(k) + noise``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[Tensor] = []
        original = captum_attr.NoiseTunnel._add_noise_to_input

        def recording(input: Tensor, stdev: float, k: int) -> Tensor:
            out = original(input, stdev, k)
            self.rows.append(out.detach().clone())
            return out

        monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(recording))

    def noise(self, x: Tensor) -> Tensor:
        """The captured draws as ``[n, B, C, H, W]`` (Captum's rows are sample-major per call)."""
        B = x.shape[0]
        cols = [z.view(B, z.shape[0] // B, *x.shape[1:]) for z in self.rows]
        return (torch.cat(cols, dim=1) - x.unsqueeze(1)).transpose(0, 1).contiguous()


# --------------------------------------------------------------------------- NoiseTunnel: vargrad, smoothgrad_sq


NT_CASES = [
    (name, nt_type, base)
    for name in MODELS
    for nt_type in ("vargrad", "smoothgrad_sq")
    for base in ("saliency", "ig_per_sample_baseline")
    if name == "smallcnn" or (nt_type == "vargrad") == (base == "saliency")
]


@pytest.mark.parametrize(("name", "nt_type", "base"), NT_CASES)
def test_noise_tunnel_types_match_captum(monkeypatch: pytest.MonkeyPatch, name: str, nt_type: str, base: str) -> None:
    model, x, y = MODELS[name]()
    n, k, sigma, m = 4, 3, 0.1, 3  # nt_samples_batch_size=3 → two Captum calls (3 + 1 draws)
    rec = _NoiseRecorder(monkeypatch)
    if base == "saliency":
        inner, kw, g0 = captum_attr.Saliency(model), {"abs": False}, Saliency()
    else:  # one baseline per sample: Captum repeats it per draw; so must robustattr
        b = 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
        inner = captum_attr.IntegratedGradients(model)
        kw = {"baselines": b, "n_steps": m, "method": "riemann_right"}
        g0 = IntegratedGradients(steps=m, baseline=b)
    torch.manual_seed(123)
    ref = captum_attr.NoiseTunnel(inner).attribute(
        x.clone(), nt_type=nt_type, nt_samples=n, stdevs=sigma, target=y, nt_samples_batch_size=k, **kw
    )
    noise = rec.noise(x)
    assert noise.shape == (n, *x.shape)
    cls = VarGrad if nt_type == "vargrad" else SmoothGradSquared
    # a chunk size that is not a multiple of B: per-sample baselines must follow their rows
    ours = cls(sigma=sigma, n_samples=n, base=g0, internal_batch_size=3).attribute_with_noise(model, x, y, noise)
    assert ours.shape == x.shape
    _assert_close_to_scale(ours, ref.detach(), rel=1e-4 if nt_type == "vargrad" else 1e-5)


def test_vargrad_and_smoothgrad_squared_closed_forms_with_uniform_noise() -> None:
    """Explicit loops over the same ℓ2-ball draw: population variance and mean of squares."""
    model, x, y = _smallcnn()
    for cls in (VarGrad, SmoothGradSquared):
        att = cls(noise="l2", radius=0.5, n_samples=4, seed=0)
        noise = att.sample_noise(x)
        assert float(noise.flatten(2).norm(dim=2).max()) <= 0.5 + 1e-6
        gs = torch.stack([Saliency()(model, x + noise[i], y, check_range=False) for i in range(4)])  # noisy copies may leave [0, 1]
        ref = gs.var(dim=0, unbiased=False) if cls is VarGrad else gs.pow(2).mean(0)
        _assert_close_to_scale(att.attribute_with_noise(model, x, y, noise), ref)


# --------------------------------------------------------------------------- IG Gauss-Legendre


@pytest.mark.parametrize("name", list(MODELS))
def test_ig_gausslegendre_matches_captum(name: str) -> None:
    model, x, y = MODELS[name]()
    b = 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    ours = IntegratedGradients(steps=7, baseline=b, method="gausslegendre", internal_batch_size=5)(model, x, y)
    ref = captum_attr.IntegratedGradients(model).attribute(x.clone(), baselines=b, target=y, n_steps=7, method="gausslegendre")
    _assert_close_to_scale(ours, ref.detach())


def test_gausslegendre_is_exact_on_polynomial_paths() -> None:
    """f_y(x) = Σ c_y ⊙ x³: IG with baseline 0 is exactly c_y ⊙ x³ for m ≥ 2 (degree-2 integrand)."""
    torch.manual_seed(0)
    c = torch.randn(3, 1, 2, 2, dtype=torch.float64)

    class Cubic(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (c.unsqueeze(0) * x.unsqueeze(1).pow(3)).flatten(2).sum(-1)

    x = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    ig = IntegratedGradients(steps=2, method="gausslegendre")(Cubic(), x, y)
    torch.testing.assert_close(ig, c[y] * x.pow(3), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- GradientSHAP


class _ScaleRecorder:
    """Records Captum GradientShap's (noisy input, baseline, α) rows from ``_scale_input``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[Tensor, Tensor, Tensor]] = []
        original = gradient_shap_module._scale_input

        def recording(input: Tensor, baseline: Tensor, rand_coefficient: Tensor) -> Tensor:
            self.calls.append((input.detach().clone(), baseline.detach().clone(), rand_coefficient.detach().clone()))
            return original(input, baseline, rand_coefficient)

        monkeypatch.setattr(gradient_shap_module, "_scale_input", recording)

    def draw(self, x: Tensor, bank: Tensor, n: int) -> GradientSHAPDraw:
        """The captured draw in robustattr's layout (Captum's rows are sample-major: i·n + j)."""
        assert len(self.calls) == 1
        xt, b, a = self.calls[0]
        B = x.shape[0]
        noise = (xt.view(B, n, *x.shape[1:]) - x.unsqueeze(1)).transpose(0, 1).contiguous()
        dist = (b.flatten(1).unsqueeze(1) - bank.flatten(1).unsqueeze(0)).abs().amax(-1)  # [B·n, M]
        index = dist.argmin(1)
        assert torch.all(dist.gather(1, index[:, None]) == 0)  # every baseline row is a bank row
        return GradientSHAPDraw(noise, index.view(B, n).T.contiguous(), a.view(B, n).T.contiguous())


@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_shap_matches_captum(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    model, x, y = MODELS[name]()
    n, sigma = 4, 0.1
    bank = torch.rand(3, *x.shape[1:], generator=torch.Generator().manual_seed(7))
    rec = _ScaleRecorder(monkeypatch)
    torch.manual_seed(0)
    ref = captum_attr.GradientShap(model).attribute(x.clone(), baselines=bank, n_samples=n, stdevs=sigma, target=y)
    draw = rec.draw(x, bank, n)
    assert abs(float(draw.noise.std()) - sigma) < 0.2 * sigma
    ours = GradientSHAP(baselines=bank, n_samples=n, sigma=sigma, internal_batch_size=5).attribute_with_noise(model, x, y, draw)
    _assert_close_to_scale(ours, ref.detach())


def test_gradient_shap_per_sample_draws_do_not_depend_on_batching() -> None:
    model, x, y = _smallcnn()
    gs = GradientSHAP(baselines=torch.rand(4, *x.shape[1:], generator=torch.Generator().manual_seed(1)), n_samples=3, sigma=0.05)
    full = gs.attribute_with_noise(model, x, y, gs.sample_noise(x, per_sample_generators([10, 11, 12, 13], "cpu")))
    part = gs.attribute_with_noise(model, x[2:], y[2:], gs.sample_noise(x[2:], per_sample_generators([12, 13], "cpu")))
    _assert_close_to_scale(part, full[2:])
    # the instance stream is reproducible from its seed
    a = GradientSHAP(n_samples=3, sigma=0.1, seed=4)(model, x, y)
    b = GradientSHAP(n_samples=3, sigma=0.1, seed=4)(model, x, y)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- Guided Backprop, Grad-CAM


@pytest.mark.parametrize("name", list(MODELS))
def test_guided_backprop_matches_captum(name: str) -> None:
    model, x, y = MODELS[name]()
    before = [type(m) for m in model.modules()]
    ours = GuidedBackprop(internal_batch_size=3)(model, x, y)
    assert [type(m) for m in model.modules()] == before  # every ReLU module is back
    ref = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=y)
    _assert_close_to_scale(ours, ref.detach())
    assert not torch.allclose(ours, Saliency()(model, x, y))  # the guided rule changed something


@pytest.mark.parametrize("name", list(MODELS))
def test_grad_cam_matches_captum(name: str) -> None:
    model, x, y = MODELS[name]()
    layer = CAM_LAYER[name]
    ours = GradCAM(layer, internal_batch_size=3)(model, x, y)
    assert ours.shape == x.shape
    cam = captum_attr.LayerGradCam(model, model.get_submodule(layer)).attribute(x.clone(), target=y, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
    assert ref.shape == (x.shape[0], 1, *x.shape[2:])
    _assert_close_to_scale(ours, ref.detach().expand_as(ours))
    assert float(ours.min()) >= 0


def test_grad_cam_default_layer_and_errors() -> None:
    model, x, y = _smallcnn()
    # layer=None: the last module with a spatial output (SmallCNN: the feature extractor's pooled maps)
    torch.testing.assert_close(GradCAM()(model, x, y), GradCAM("1.features")(model, x, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="layer"):
        GradCAM("1.features.99")(model, x, y)


# --------------------------------------------------------------------------- Captum adapter


@pytest.mark.parametrize("name", list(MODELS))
def test_captum_adapter_equals_captum_and_robustattr(name: str) -> None:
    model, x, y = MODELS[name]()
    # a non-constant baseline: no exact max-pool ties that batch-size dependent rounding could break
    b = 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    ig = CaptumAttribution(
        "captum.attr.IntegratedGradients", n_steps=6, baselines=b, attribute_kwargs={"method": "riemann_right"}
    )(model, x, y)
    _assert_close_to_scale(ig, IntegratedGradients(steps=6, baseline=b)(model, x, y))
    sal = CaptumAttribution("captum.attr.Saliency")(model, x, y)  # Captum's default abs=True
    _assert_close_to_scale(sal, Saliency()(model, x, y).abs())
    cam = CaptumAttribution("captum.attr.GuidedGradCam", init_kwargs={"layer": CAM_LAYER[name]})(model, x, y)
    ref = captum_attr.GuidedGradCam(model, model.get_submodule(CAM_LAYER[name])).attribute(x.clone(), target=y)
    _assert_close_to_scale(cam, ref.detach())


def test_captum_adapter_per_sample_baselines_inside_smoothgrad() -> None:
    model, x, y = _smallcnn()
    b = 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    sg = SmoothGrad(sigma=0.1, n_samples=3, seed=0, internal_batch_size=5)
    noise = sg.sample_noise(x)
    capt = CaptumAttribution(
        "captum.attr.IntegratedGradients", per_sample_kwargs=("baselines",), baselines=b, n_steps=4,
        attribute_kwargs={"method": "riemann_right"},
    )
    sg.base = capt
    ours = sg.attribute_with_noise(model, x, y, noise)
    ref = SmoothGrad(sigma=0.1, n_samples=3, base=IntegratedGradients(steps=4, baseline=b)).attribute_with_noise(model, x, y, noise)
    _assert_close_to_scale(ours, ref)


def test_captum_adapter_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _smallcnn()
    with pytest.raises(ValueError, match="method"):
        CaptumAttribution("torch.nn.Linear")
    with pytest.raises(ValueError, match="NoSuchMethod"):
        CaptumAttribution("captum.attr.NoSuchMethod")
    with pytest.raises(ValueError, match="shaped like x"):
        CaptumAttribution("captum.attr.LayerGradCam", init_kwargs={"layer": "1.features.7"})(model, x, y)
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if captum were not installed
    with pytest.raises(RuntimeError, match="pip install captum"):
        CaptumAttribution("captum.attr.Saliency")


# --------------------------------------------------------------------------- differentiability, side effects


def _softplus_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = build_model(SmallCNN(width=8, hidden=32), (0.3,), (0.3,))
    return replace_activation(net, nn.Softplus(beta=5.0)).eval()


NEW: dict[str, Callable[[], Attribution]] = {
    "vargrad": lambda: VarGrad(sigma=0.1, n_samples=3, seed=0),
    "smoothgrad_squared_l2": lambda: SmoothGradSquared(noise="l2", radius=0.5, n_samples=3, seed=0, internal_batch_size=4),
    "ig_gausslegendre": lambda: IntegratedGradients(steps=3, method="gausslegendre"),
    "gradient_shap": lambda: GradientSHAP(n_samples=3, sigma=0.1, seed=0),
    "guided_backprop": lambda: GuidedBackprop(),
    "grad_cam": lambda: GradCAM("1.features.7"),
}

#: the one parameter no gradient-based attribution depends on
FINAL_BIAS = "1.classifier.5.bias"


@pytest.mark.parametrize("key", list(NEW))
def test_create_graph_gradients_reach_the_parameters(key: str) -> None:
    model = _softplus_cnn()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2])
    att = NEW[key]()
    assert att.differentiable
    g = att(model, x, y, create_graph=True)
    assert g.requires_grad
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(g.pow(2).sum(), list(model.parameters()), allow_unused=True)
    for name, gr in zip(names, grads, strict=True):
        if name == FINAL_BIAS:  # input/layer gradients of a logit do not depend on its bias
            continue
        assert gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0, f"{key}: no gradient for {name}"


@pytest.mark.parametrize("key", ["vargrad", "gradient_shap", "guided_backprop", "grad_cam"])
def test_create_graph_gradient_wrt_x_matches_finite_differences(key: str) -> None:
    """d/dx Σ g(x)² against central differences (float64 softplus network, fixed draws)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 2), nn.Softplus(beta=2.0), nn.Flatten(), nn.Linear(3 * 2 * 2, 3)
    ).double().eval()
    x0 = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    y = torch.tensor([0, 2])
    if key == "vargrad":
        att: Attribution = VarGrad(sigma=0.1, n_samples=3, seed=0)
        noise = att.sample_noise(x0)  # type: ignore[attr-defined]
        f = lambda x, cg=False: att.attribute_with_noise(model, x, y, noise, create_graph=cg)  # type: ignore[attr-defined]  # noqa: E731
    elif key == "gradient_shap":
        att = GradientSHAP(baselines=torch.rand(2, 1, 3, 3, dtype=torch.float64), n_samples=3, sigma=0.1, seed=0)
        draw = att.sample_noise(x0)  # type: ignore[attr-defined]
        f = lambda x, cg=False: att.attribute_with_noise(model, x, y, draw, create_graph=cg)  # type: ignore[attr-defined]  # noqa: E731
    else:
        att = GuidedBackprop() if key == "guided_backprop" else GradCAM("1")
        f = lambda x, cg=False: att(model, x, y, create_graph=cg)  # noqa: E731
    x = x0.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(f(x, True).pow(2).sum(), x)
    fd = torch.zeros_like(x0)
    h = 1e-6
    for i in range(x0.numel()):
        e = torch.zeros(x0.numel(), dtype=torch.float64)
        e[i] = h
        e = e.view_as(x0)
        fd.view(-1)[i] = (f(x0 + e).pow(2).sum() - f(x0 - e).pow(2).sum()) / (2 * h)
    assert fd.abs().max() > 0
    torch.testing.assert_close(gx, fd, rtol=1e-4, atol=1e-8)


def test_non_differentiable_attribution_refuses_create_graph() -> None:
    model, x, y = _smallcnn()
    capt = CaptumAttribution("captum.attr.Saliency", abs=False)
    assert not capt.differentiable
    with pytest.raises(ValueError, match="create_graph"):
        capt(model, x, y, create_graph=True)
    for wrapper in (SmoothGrad(n_samples=2, base=capt, seed=0), VarGrad(n_samples=2, base=capt, seed=0)):
        assert not wrapper.differentiable
        with pytest.raises(ValueError, match="create_graph"):
            wrapper(model, x, y, create_graph=True)
    assert SmoothGrad(n_samples=2, base=capt, seed=0)(model, x, y).shape == x.shape  # evaluation still works


@pytest.mark.parametrize("key", [*NEW, "captum"])
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
    modules_before = [type(m) for m in model.modules()]
    att = NEW[key]() if key != "captum" else CaptumAttribution("captum.attr.IntegratedGradients", n_steps=3)
    g = att(model, x, torch.tensor([0, 1]))
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert torch.equal(x.detach(), x_before)
    assert all(m.training is training for m in model.modules())
    assert [type(m) for m in model.modules()] == modules_before
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    if requires_grad:
        assert torch.equal(x.grad, torch.full_like(x, 7.0))
    else:
        assert x.grad is None and not x.requires_grad


# --------------------------------------------------------------------------- per-sample baselines in smoothing wrappers


@pytest.mark.parametrize("cls", [SmoothGrad, UniformSmoothed, VarGrad, SmoothGradSquared])
def test_per_sample_baseline_inside_smoothing_wrappers(cls: type) -> None:
    """A ``[B, C, H, W]`` IG baseline inside a wrapper = explicit loop over the same noise."""
    model, x, y = _smallcnn()
    b = 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(4))
    ig = IntegratedGradients(steps=3, baseline=b)
    att = cls(n_samples=3, base=ig, seed=1, internal_batch_size=5)
    noise = att.sample_noise(x)
    ours = att.attribute_with_noise(model, x, y, noise)
    gs = torch.stack([ig(model, x + noise[i], y, check_range=False) for i in range(3)])
    if cls is VarGrad:
        ref = gs.var(0, unbiased=False)
    elif cls is SmoothGradSquared:
        ref = gs.pow(2).mean(0)
    else:
        ref = gs.mean(0)
    _assert_close_to_scale(ours, ref)
    # nested wrappers pass the rows through
    nested = SmoothGrad(n_samples=2, base=cls(n_samples=2, base=ig, seed=2), seed=3, internal_batch_size=3)
    assert nested(model, x, y).shape == x.shape


def test_ig_baseline_with_wrong_rows_is_a_value_error() -> None:
    model, x, y = _smallcnn()
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(steps=2, baseline=torch.zeros(3, *x.shape[1:]))(model, x, y)


def test_smoothing_per_sample_generators_do_not_depend_on_batching() -> None:
    model, x, y = _smallcnn()
    vg = VarGrad(sigma=0.1, n_samples=3, base=InputXGradient())
    full = vg.attribute_with_noise(model, x, y, vg.sample_noise(x, per_sample_generators([5, 6, 7, 8], "cpu")))
    part = vg.attribute_with_noise(model, x[1:3], y[1:3], vg.sample_noise(x[1:3], per_sample_generators([6, 7], "cpu")))
    _assert_close_to_scale(part, full[1:3])


# --------------------------------------------------------------------------- registry


def test_registry_lists_and_builds_the_new_attributions() -> None:
    names = registry.available("attribution")
    expected = {
        "vargrad": VarGrad,
        "smoothgrad_squared": SmoothGradSquared,
        "gradient_shap": GradientSHAP,
        "guided_backprop": GuidedBackprop,
        "grad_cam": GradCAM,
        "captum": CaptumAttribution,
    }
    for name, cls in expected.items():
        assert name in names
        assert registry.get("attribution", name) is cls
    assert isinstance(registry.build("attribution", "grad_cam", layer="1.features.7"), GradCAM)
    assert registry.build("attribution", "vargrad", n_samples=7).n_samples == 7
