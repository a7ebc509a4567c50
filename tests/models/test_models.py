"""Backbones, Normalize and the softplus activation swap."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustattr.models import (
    Normalize,
    SmallCNN,
    TimmBackbone,
    build_model,
    replace_activation,
    softplus_surrogate,
)


@pytest.mark.parametrize(("size", "channels", "flat"), [(28, 1, 64 * 4 * 4), (32, 3, 64 * 5 * 5)])
def test_small_cnn_shapes(size: int, channels: int, flat: int) -> None:
    net = SmallCNN(in_channels=channels, num_classes=7, input_size=size)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 4 and len(linears) == 3  # seed 001's MNIST network
    assert linears[0].in_features == flat  # ((S-4)//2-4)//2 squared × 64
    assert net(torch.rand(3, channels, size, size)).shape == (3, 7)
    with pytest.raises(ValueError, match="14x14"):
        SmallCNN(input_size=12)


def test_timm_resnet18_cifar_stem() -> None:
    torch.manual_seed(0)
    net = TimmBackbone("resnet18", num_classes=10, in_channels=3, cifar_stem=True)
    conv1 = net.net.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(net.net.maxpool, nn.Identity)
    # Stride-1 stem, no max-pool: the last stage sees 32/8 = 4×4 feature maps.
    feats = net.net.forward_features(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 512, 4, 4)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    plain = TimmBackbone("resnet18", num_classes=10).eval()
    assert plain.net.forward_features(torch.rand(1, 3, 32, 32)).shape[-1] == 1  # 32/32
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone("not_a_model_xyz")


def test_replace_activation_shares_parameters_and_keeps_original() -> None:
    torch.manual_seed(0)
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).eval()
    sur = replace_activation(model, nn.Softplus(beta=10.0))
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), sur.named_parameters(), strict=True):
        assert n1 == n2 and p1.data_ptr() == p2.data_ptr() and p1 is p2
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 6
    assert not any(isinstance(m, nn.ReLU) for m in sur.modules())
    assert sum(isinstance(m, nn.Softplus) for m in sur.modules()) == 6
    assert sur.training is False
    # An in-place update of the original's weights is seen by the surrogate.
    x = torch.rand(2, 1, 28, 28)
    before = sur(x)
    with torch.no_grad():
        model[1].classifier[5].bias.add_(1.0)
    torch.testing.assert_close(sur(x), before + 1.0)


def test_replace_activation_in_timm_resnet18_inplace_relu() -> None:
    torch.manual_seed(0)
    model = build_model(TimmBackbone("resnet18", num_classes=10, cifar_stem=True), (0.5,) * 3, (0.25,) * 3).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)  # timm's act_layer(inplace=True)
    sur = replace_activation(model, nn.Softplus(beta=10.0))
    assert not any(isinstance(m, nn.ReLU) for m in sur.modules())
    assert len([m for m in model.modules() if isinstance(m, nn.ReLU)]) == len(relus)  # original untouched
    assert {p.data_ptr() for p in model.parameters()} == {p.data_ptr() for p in sur.parameters()}
    assert {b.data_ptr() for b in model.buffers()} == {b.data_ptr() for b in sur.buffers()}
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out, out_s = model(x), sur(x)
    assert not torch.allclose(out, out_s)
    # the surrogate is smooth: second derivatives w.r.t. the input exist and are non-zero
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(sur(xs)[:, 0].sum(), xs, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), xs)
    assert h.abs().sum() > 0


def test_surrogate_approaches_original_as_beta_grows() -> None:
    torch.manual_seed(0)
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        errs = [float((replace_activation(model, nn.Softplus(beta=b))(x) - ref).abs().max()) for b in (1, 10, 100, 1000)]
    assert errs[0] > 0
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 1e-2 * errs[0]


def test_softplus_surrogate_cache_and_mode() -> None:
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).eval()
    s1 = softplus_surrogate(model, 10.0)
    assert softplus_surrogate(model, 10.0) is s1 and softplus_surrogate(model, 5.0) is not s1
    model.train()
    assert softplus_surrogate(model, 10.0).training
    smooth = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Softplus())
    assert softplus_surrogate(smooth) is smooth
    with pytest.raises(ValueError, match="beta"):
        softplus_surrogate(model, 0.0)
    with pytest.raises(ValueError, match="no ReLU"):
        replace_activation(smooth, nn.Softplus())


def test_normalize_layer_and_build_model() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    norm = Normalize(mean, std)
    x = torch.rand(2, 3, 4, 5)
    ref = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(norm(x), ref)
    assert "mean" in dict(norm.named_buffers()) and not list(norm.parameters())
    with pytest.raises(ValueError, match="channels"):
        norm(torch.rand(2, 1, 4, 5))
    with pytest.raises(ValueError, match="std"):
        Normalize((0.0,), (0.0,))
    lin = nn.Sequential(nn.Flatten(), nn.Linear(60, 2))
    model = build_model(lin, mean, std)
    torch.testing.assert_close(model(x), lin(ref))
    torch.testing.assert_close(F.softmax(model(x), 1).sum(1), torch.ones(2))


def test_small_cnn_pool_option() -> None:
    import torch.nn as nn

    from robustattr.models import SmallCNN

    avg = SmallCNN(pool="avg")
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.modules())
    assert sum(isinstance(m, nn.AvgPool2d) for m in avg.modules()) == 2
    assert avg(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="pool"):
        SmallCNN(pool="median")


def test_smooth_maxpool_bounds_and_gradient() -> None:
    """Log-mean-exp pooling: max − log(n)/β ≤ y ≤ max (F.max_pool2d reference); gradient = window softmax."""
    from robustattr.models import SmoothMaxPool2d

    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 0)]:
        ref = F.max_pool2d(x, k, s, p)
        for beta in (5.0, 50.0, 500.0):
            y = SmoothMaxPool2d(k, s, p, beta=beta)(x)
            assert y.shape == ref.shape
            n = k * k
            assert torch.all(y <= ref + 1e-12)
            # with padding, border windows hold fewer real entries: the gap is still ≤ log(n)/β
            assert torch.all(y >= ref - math.log(n) / beta - 1e-12)
    # gradient of one output w.r.t. its 2x2 window is the softmax of β·window (explicit formula)
    xr = x.clone().requires_grad_(True)
    beta = 7.0
    y = SmoothMaxPool2d(2, beta=beta)(xr)
    (g,) = torch.autograd.grad(y[0, 0, 1, 2], xr)
    win = x[0, 0, 2:4, 4:6]
    expected = torch.softmax(beta * win.flatten(), 0).view(2, 2)
    assert torch.allclose(g[0, 0, 2:4, 4:6], expected, atol=1e-12)
    assert g.abs().sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="beta"):
        SmoothMaxPool2d(2, beta=0.0)


def test_softplus_surrogate_smooth_pool_shares_weights() -> None:
    from robustattr.models import SmallCNN, SmoothMaxPool2d, build_model, softplus_surrogate

    model = build_model(SmallCNN(width=4, hidden=8), (0.5,), (0.5,))
    sur = softplus_surrogate(model, 10.0, smooth_pool=True)
    assert sur is softplus_surrogate(model, 10.0, smooth_pool=True)  # cached per (β, option)
    assert softplus_surrogate(model, 10.0) is sur  # max-pooling is smoothed by default
    relu_only = softplus_surrogate(model, 10.0, smooth_pool=False)
    assert relu_only is not sur and sum(isinstance(m, nn.MaxPool2d) for m in relu_only.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in relu_only.modules())
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in sur.modules())
    assert sum(isinstance(m, SmoothMaxPool2d) for m in sur.modules()) == 2
    assert all(a is b for a, b in zip(model.parameters(), sur.parameters(), strict=True))
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())  # the original is unchanged
