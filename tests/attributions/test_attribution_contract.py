"""Issue cases of the input contract for attributions: bad inputs and non-finite internals raise."""

from __future__ import annotations

import pytest
import torch

from robustattr.attributions import (
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    UniformSmoothed,
)
from tests.helpers import (
    nan_logit_model,
    overflowing_model,
    tiny_batch,
    tiny_cnn,
    vector_output_model,
)

ATTRS = {
    "saliency": lambda: Saliency(),
    "input_x_gradient": lambda: InputXGradient(),
    "ig": lambda: IntegratedGradients(steps=4),
    "smoothgrad": lambda: SmoothGrad(n_samples=3, seed=0),
    "uniform_smoothed": lambda: UniformSmoothed(radius=0.3, n_samples=3, seed=0),
}


@pytest.mark.parametrize("name", ["saliency", "smoothgrad", "uniform_smoothed"])
def test_nan_logits_with_finite_gradient_raise(name: str) -> None:
    """Before: finite maps were returned although every logit was NaN."""
    x, y = tiny_batch()
    with torch.no_grad():
        assert torch.isnan(nan_logit_model()(x)).all()
    with pytest.raises(ValueError, match=r"^attribution is NaN/inf for samples \[0, 1, 2, 3\]"):
        ATTRS[name]()(nan_logit_model(), x, y)


@pytest.mark.parametrize("name", sorted(ATTRS))
def test_overflowing_network_raises(name: str) -> None:
    """A network whose logits overflow gives ±inf/NaN gradients: refused, not returned."""
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=r"^attribution is NaN/inf for samples \[0, 1, 2, 3\]"):
        ATTRS[name]()(overflowing_model(), x, y)


@pytest.mark.parametrize("name", sorted(ATTRS))
def test_nan_pixel_raises_naming_the_sample(name: str) -> None:
    """Before: InputXGradient/IG returned partly NaN maps, the others finite maps, without an error."""
    x, y = tiny_batch()
    x[2, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^x: samples \[2\] contain NaN/inf$"):
        ATTRS[name]()(tiny_cnn(), x, y)


def test_out_of_range_input_and_the_escape() -> None:
    x, y = tiny_batch()
    from robustattr.utils import range_check

    with pytest.raises(ValueError, match=r"^x: samples \[0, 1, 2, 3\] lie outside \[0, 1\] \(min .*, max .*\); .*range_check\(False\)"):
        Saliency()(tiny_cnn(), 255 * x, y)
    with range_check(False):
        g = Saliency()(tiny_cnn(), 255 * x, y)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="outside"):  # the escape is scoped to the with-block
        Saliency()(tiny_cnn(), 255 * x, y)


def test_vector_output_model_gives_a_clear_error() -> None:
    """Before: IndexError: Dimension out of range."""
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=r"^model output has shape \[4\], expected \[B, K\] = \[4, K\]$"):
        Saliency()(vector_output_model(), x, y)


@pytest.mark.parametrize("name", sorted(ATTRS))
def test_labels_out_of_range(name: str) -> None:
    """Before: RuntimeError (index out of bounds) on CPU, a device-side assert on CUDA."""
    x, y = tiny_batch()
    y[1] = 12
    with pytest.raises(ValueError, match=r"^y: samples \[1\] have class 12 outside \[0, 10\)$"):
        ATTRS[name]()(tiny_cnn(), x, y)


def test_noisy_copies_inside_smoothing_are_not_rechecked() -> None:
    """The contract is checked once, at the public entry: SmoothGrad's noisy copies leave [0, 1]."""
    x, y = tiny_batch()
    x = x.clamp(0.0, 1.0)
    x[:, :, 0, 0] = 1.0  # σ = 1 noise pushes pixels far outside [0, 1]
    g = SmoothGrad(sigma=1.0, n_samples=4, seed=0)(tiny_cnn(), x, y)
    assert g.shape == x.shape and torch.isfinite(g).all()
