"""Issue cases for the worst-case bounds: bad input raises ValueError; BatchNorm models are bounded in eval mode;
max-pooling is smoothed by default; the protocol reports the largest relative excess over T'_e."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from robustattr.attributions import Saliency
from robustattr.bounds import (
    full_jacobian,
    smooth_model,
    top_singular,
    worst_case_bounds,
)
from robustattr.evaluation.bounds import evaluate_bounds
from robustattr.models import SmoothMaxPool2d
from tests.helpers import tiny_batch, tiny_cnn, vector_output_model

pytestmark = pytest.mark.filterwarnings("ignore:.*ReLU activations:UserWarning")

ENTRIES = {
    "worst_case_bounds": lambda m, x, y: worst_case_bounds(Saliency(), m, x, y, eps=0.1, iters=5),
    "top_singular": lambda m, x, y: top_singular(Saliency(), m, x, y, iters=5),
    "full_jacobian": lambda m, x, y: full_jacobian(Saliency(), m, x, y),
    "evaluate_bounds": lambda m, x, y: evaluate_bounds(m, Saliency(), x, y, eps=0.1, attack_repeats=1, attack_steps=2, iters=5),
}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_nan_input_raises_value_error(name: str) -> None:
    """Before: worst_case_bounds on NaN died in eigh with torch._C._LinAlgError."""
    x, y = tiny_batch()
    x[0] = float("nan")
    with pytest.raises(ValueError, match=r"^x: samples \[0\] contain NaN/inf$"):
        ENTRIES[name](tiny_cnn(), x, y)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_vector_output_labels_and_range(name: str) -> None:
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=r"^model output has shape \[4\], expected \[B, K\] = \[4, K\]$"):
        ENTRIES[name](vector_output_model(), x, y)
    with pytest.raises(ValueError, match=r"lie outside \[0, 1\]"):
        ENTRIES[name](tiny_cnn(), 255 * x, y)
    y[2] = 11
    with pytest.raises(ValueError, match=r"^y: samples \[2\] have class 11 outside \[0, 10\)$"):
        ENTRIES[name](tiny_cnn(), x, y)


def test_batchnorm_model_in_train_mode_is_bounded_in_eval_mode() -> None:
    """Before: BatchNorm used batch statistics, so J coupled the samples and ξ_max depended on the batch."""
    x, y = tiny_batch(4)
    model = tiny_cnn(batchnorm=True)
    start = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    def run(m: nn.Module, sl: slice) -> object:
        return worst_case_bounds(Saliency(), m, x[sl], y[sl], eps=0.05, iters=30, tol=None, start=start[sl])

    ref = run(model.eval(), slice(0, 4))
    model.train()
    model[0].eval()  # a mixed tree: the convolution in eval mode, BatchNorm and the rest in train mode
    modes = [m.training for m in model.modules()]
    full, part = run(model, slice(0, 4)), run(model, slice(1, 3))
    assert [m.training for m in model.modules()] == modes
    for key in ("xi_max", "g_norm", "T_e", "T_e_prime"):
        torch.testing.assert_close(getattr(full, key), getattr(ref, key), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(getattr(part, key), getattr(ref, key)[1:3], rtol=1e-5, atol=1e-7)


def test_max_pooling_is_smoothed_by_default() -> None:
    model = tiny_cnn()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        sur = smooth_model(model)
    assert any(isinstance(m, SmoothMaxPool2d) for m in sur.modules())
    assert not any(isinstance(m, (nn.MaxPool2d, nn.ReLU)) for m in sur.modules())
    assert not any("max pooling" in str(w.message) for w in rec)
    with pytest.warns(UserWarning, match="max pooling"):
        opt_out = smooth_model(model, smooth_pool=False)
    assert any(isinstance(m, nn.MaxPool2d) for m in opt_out.modules())


def test_summary_reports_largest_relative_excess_over_T_e_prime() -> None:
    x, y = tiny_batch(3)
    ev = evaluate_bounds(tiny_cnn(), Saliency(), x, y, eps=0.1, attack_repeats=1, attack_steps=3, iters=10)
    s, t = ev.summary(), ev.tensors
    keep = ~t["skipped"]
    dist, bound = t["dist_max"][keep].double(), t["T_e_prime"][keep].double()
    ref = ((dist - bound) / bound).max()
    assert bool((bound > 0).all())
    assert s["max_rel_excess_T_e_prime"] == pytest.approx(float(ref), rel=1e-9, abs=1e-15)
