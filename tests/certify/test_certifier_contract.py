"""Issue cases for the certifier: bad input is never certified; a model in train mode is evaluated in eval mode."""

from __future__ import annotations

import pytest
import torch

from robustattr.certify import UniformSmoothingCertifier
from tests.helpers import tiny_batch, tiny_cnn, vector_output_model


def _cert(**kw) -> UniformSmoothingCertifier:  # type: ignore[no-untyped-def]
    return UniformSmoothingCertifier(radius=0.25, n_samples=64, noise_block=16, **kw)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_all_nan_or_inf_image_is_not_certified(value: float) -> None:
    """Before: cos_lower 0.99976, eps_max 0.0020 for an all-NaN image."""
    x, _ = tiny_batch()
    x[1] = value
    with pytest.raises(ValueError, match=r"^x: samples \[1\] contain NaN/inf$"):
        _cert().certify(tiny_cnn(), x)
    with pytest.raises(ValueError, match=r"^x: samples \[1\] contain NaN/inf$"):
        _cert().min_radius(tiny_cnn(), x, eps=1e-3, tau=0.9, radii=[0.25])


def test_nan_pixel_is_named_by_dataset_index() -> None:
    x, _ = tiny_batch()
    x[2, 0, 4, 4] = float("nan")
    with pytest.raises(ValueError, match=r"^x: samples \[52\] contain NaN/inf$"):
        _cert().certify(tiny_cnn(), x, index=torch.arange(50, 54))


def test_out_of_range_is_refused_unless_range_check_is_off() -> None:
    """Before: inputs ×255 were certified without a word."""
    from robustattr.utils import range_check

    x, _ = tiny_batch()
    with pytest.raises(ValueError, match=r"lie outside \[0, 1\]"):
        _cert().certify(tiny_cnn(), 255 * x)
    with range_check(False):
        c = _cert().certify(tiny_cnn(), 255 * x)
    assert torch.isfinite(c.h_norm).all()


def test_vector_output_and_labels() -> None:
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=r"^model output has shape \[4\], expected \[B, K\] = \[4, K\]$"):
        _cert().certify(vector_output_model(), x)
    y[3] = 10
    with pytest.raises(ValueError, match=r"^y: samples \[3\] have class 10 outside \[0, 10\)$"):
        _cert().certify(tiny_cnn(), x, y)


def test_batchnorm_model_in_train_mode_is_certified_as_in_eval_mode() -> None:
    """Before: ĝ of one row depended on the other rows (BatchNorm batch statistics), so the
    certificate depended on batch_size and differed from the eval-mode function's."""
    x, _ = tiny_batch(4)
    model = tiny_cnn(batchnorm=True)
    index = torch.arange(10, 14)
    ref = _cert(batch_size=64).certify(model.eval(), x, index=index)
    r_ref = _cert().min_radius(model, x, eps=1e-4, tau=0.5, radii=[0.25, 0.5], index=index)
    model.train()
    model[-1].eval()  # a mixed tree comes back exactly as it was
    modes = [m.training for m in model.modules()]
    for bs in (7, 64):
        c = _cert(batch_size=bs).certify(model, x, index=index)
        torch.testing.assert_close(c.h_hat, ref.h_hat, rtol=0, atol=1e-6)
        torch.testing.assert_close(c.h_norm, ref.h_norm, rtol=0, atol=1e-9)
        torch.testing.assert_close(c.y, ref.y)
        assert [m.training for m in model.modules()] == modes
    half = _cert(batch_size=5).certify(model, x[2:], index=index[2:])
    torch.testing.assert_close(half.h_norm, ref.h_norm[2:], rtol=0, atol=1e-9)
    r = _cert().min_radius(model, x, eps=1e-4, tau=0.5, radii=[0.25, 0.5], index=index)
    torch.testing.assert_close(r, r_ref, equal_nan=True)
    assert [m.training for m in model.modules()] == modes
