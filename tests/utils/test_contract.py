"""The input-contract checks: messages name the argument and the samples; range_check scopes the escape."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from robustattr.utils import contract, range_check
from robustattr.utils.contract import (
    check_batch,
    check_call,
    check_finite,
    check_images,
    check_labels,
    check_logits,
    check_model_output,
    entry,
    poison_nonfinite_rows,
    range_check_enabled,
)


def _x(B: int = 5) -> torch.Tensor:
    return torch.rand(B, 1, 4, 4, generator=torch.Generator().manual_seed(0))


# ---- images ------------------------------------------------------------------------------
def test_valid_images_pass_and_empty_batch_is_fine() -> None:
    check_images(_x())
    check_images(torch.zeros(2, 3, 2, 2))
    check_images(torch.ones(2, 3, 2, 2, dtype=torch.float64))
    check_images(torch.empty(0, 1, 4, 4))


@pytest.mark.parametrize(("value", "rows"), [(float("nan"), [0, 3]), (float("inf"), [3]), (float("-inf"), [1, 4])])
def test_nonfinite_images_name_the_samples(value: float, rows: list[int]) -> None:
    x = _x()
    for r in rows:
        x[r, 0, r % 4, 1] = value
    with pytest.raises(ValueError, match=rf"^x: samples \[{', '.join(map(str, rows))}\] contain NaN/inf$"):
        check_images(x)


def test_all_nan_image_and_dataset_indices() -> None:
    x = _x()
    x[2] = float("nan")
    with pytest.raises(ValueError, match=r"^images: samples \[102\] contain NaN/inf$"):
        check_images(x, "images", index=torch.arange(100, 105))


def test_out_of_range_message_and_escape() -> None:
    x = _x()
    x[2, 0, 0, 0] = -0.2
    x[4, 0, 1, 1] = 255.0
    msg = r"^x: samples \[2, 4\] lie outside \[0, 1\] \(min -0\.2, max 255\); .*`with robustattr\.utils\.range_check\(False\):`$"
    with pytest.raises(ValueError, match=msg):
        check_images(x)
    check_images(x, check_range=False)
    assert range_check_enabled()
    with range_check(False):
        assert not range_check_enabled()
        check_images(x)
        check_batch(x, torch.zeros(5, dtype=torch.long))
        x_nan = x.clone()
        x_nan[1] = float("nan")
        with pytest.raises(ValueError, match="NaN/inf"):  # finiteness is still checked
            check_images(x_nan)
    assert range_check_enabled()
    with pytest.raises(ValueError, match="outside"):
        check_images(x)


def test_range_check_restores_on_error_and_nests() -> None:
    with pytest.raises(RuntimeError), range_check(False):
        raise RuntimeError("boom")
    assert range_check_enabled()
    with range_check(False):
        with range_check(True):
            assert range_check_enabled()
        assert not range_check_enabled()
    with pytest.raises(ValueError, match="True or False"):
        with range_check(0):  # type: ignore[arg-type]
            pass


def test_range_check_is_local_to_the_thread() -> None:
    seen: list[bool] = []
    with range_check(False):
        t = threading.Thread(target=lambda: seen.append(range_check_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_many_samples_are_cut() -> None:
    x = torch.full((30, 1, 2, 2), float("nan"))
    with pytest.raises(ValueError, match=r"^x: samples \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\] \(30 samples\) contain NaN/inf$"):
        check_images(x)


def test_image_structure() -> None:
    with pytest.raises(ValueError, match=r"^x must be a floating tensor of pixels in \[0, 1\], got torch.uint8$"):
        check_images(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^x must have shape \[B, C, H, W\], got \[1, 4, 4\]$"):
        check_images(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"^x must be a torch.Tensor, got list$"):
        check_images([0.0])  # type: ignore[arg-type]
    check_images(torch.zeros(3, 7), ndim=None)


# ---- labels and logits ---------------------------------------------------------------------
def test_labels() -> None:
    check_labels(torch.tensor([0, 9, 3]), 3, 10)
    check_labels(torch.tensor([0, 9, 3], dtype=torch.int32), 3)
    with pytest.raises(ValueError, match=r"^y: samples \[1\] have class 12 outside \[0, 10\)$"):
        check_labels(torch.tensor([0, 12, 3]), 3, 10)
    with pytest.raises(ValueError, match=r"^y: samples \[0, 2\] have classes \[-1, 10\] outside \[0, 10\)$"):
        check_labels(torch.tensor([-1, 2, 10]), 3, 10)
    with pytest.raises(ValueError, match=r"^y: samples \[2\] have class -3 outside \[0, K\)$"):
        check_labels(torch.tensor([0, 1, -3]), 3)
    with pytest.raises(ValueError, match=r"^y must hold integer class indices, got torch.float32$"):
        check_labels(torch.tensor([0.0, 1.0]), 2, 10)
    with pytest.raises(ValueError, match=r"^y must have shape \[B\] = \[3\], got \[3, 1\]$"):
        check_labels(torch.zeros(3, 1, dtype=torch.long), 3, 10)


def test_logits() -> None:
    assert check_logits(torch.zeros(8, 10), 8) == 10
    with pytest.raises(ValueError, match=r"^model output has shape \[8\], expected \[B, K\] = \[8, K\]$"):
        check_logits(torch.zeros(8), 8)
    with pytest.raises(ValueError, match=r"^model output has shape \[4, 10\], expected \[B, K\] = \[8, K\]$"):
        check_logits(torch.zeros(4, 10), 8)
    logits = torch.zeros(8, 10)
    logits[3, 2] = float("nan")
    logits[5, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^model output is NaN/inf for samples \[3, 5\] \(does the network overflow\?\)$"):
        check_logits(logits, 8)
    with pytest.raises(ValueError, match=r"^y: samples \[7\] have class 10 outside \[0, 10\)$"):
        check_logits(torch.zeros(8, 10), 8, labels=torch.tensor([0] * 7 + [10]))
    big = torch.full((2, 3), 3e38)  # finite, although its float32 sum would overflow
    assert check_logits(big, 2) == 3


def test_finite() -> None:
    g = torch.zeros(4, 1, 2, 2)
    check_finite(g, "attribution")
    g[0, 0, 0, 0] = float("nan")
    g[2, 0, 1, 1] = float("-inf")
    with pytest.raises(ValueError, match=r"^attribution is NaN/inf for samples \[0, 2\] \(does the network overflow\?\)$"):
        check_finite(g, "attribution")
    with pytest.raises(ValueError, match=r"^loss is NaN/inf for samples \[0\]$"):
        check_finite(torch.tensor(float("nan")), "loss", hint="")


def test_poison_rows() -> None:
    g = torch.ones(3, 2, requires_grad=True)
    logits = torch.zeros(3, 4)
    logits[1, 2] = float("nan")
    out = poison_nonfinite_rows(g * 2, logits)
    assert torch.isnan(out[1]).all() and torch.equal(out[[0, 2]], torch.full((2, 2), 2.0))
    out[[0, 2]].sum().backward()
    assert torch.equal(g.grad, torch.tensor([[2.0, 2.0], [0.0, 0.0], [2.0, 2.0]]))


# ---- entries ---------------------------------------------------------------------------------
def test_only_the_outermost_entry_checks_and_labels_are_checked_once() -> None:
    calls: list[int] = []
    real = contract.check_labels

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*a, **k)

    assert not contract.inside_entry()
    with entry(labels=torch.tensor([0, 3])) as outer:
        assert outer and contract.inside_entry()
        with entry() as inner:
            assert not inner
        contract.check_labels = spy  # type: ignore[assignment]
        try:
            check_model_output(torch.zeros(2, 5), 2)
            check_model_output(torch.zeros(6, 5), 6)  # folded copies: labels already checked
        finally:
            contract.check_labels = real  # type: ignore[assignment]
    assert calls == [1]
    assert not contract.inside_entry()
    with pytest.raises(ValueError, match=r"^y: samples \[1\] have class 3 outside \[0, 3\)$"):
        with entry(labels=torch.tensor([0, 3])):
            check_model_output(torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match=r"^model output has shape \[2\], expected \[B, K\] = \[2, K\]$"):
        check_model_output(torch.zeros(2), 2)
    with pytest.raises(ValueError, match=r"class 7 outside \[0, 3\)"):  # outside any entry: its own labels
        check_model_output(torch.zeros(2, 3), 2, torch.tensor([7, 0]))


def test_check_call_uses_eval_mode_and_restores_it() -> None:
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(16), nn.Linear(16, 3))
    model.train()
    model[2].eval()
    stats = model[1].running_mean.clone()
    logits = check_call(model, _x(), torch.tensor([0, 1, 2, 0, 1]))
    assert logits.shape == (5, 3) and not logits.requires_grad
    assert torch.equal(model[1].running_mean, stats)  # no train-mode forward happened
    assert [m.training for m in model.modules()] == [True, True, True, False]
    with pytest.raises(ValueError, match=r"class 3 outside \[0, 3\)"):
        check_call(model, _x(), torch.tensor([0, 1, 2, 3, 1]))


def test_range_option_only_switches_the_check_off() -> None:
    """An entry's ``check_range`` keyword: False disables the range check, True keeps the surrounding setting."""
    from robustattr.utils.contract import range_option

    x = 255 * _x()
    with range_option(False):
        assert not range_check_enabled()
        check_images(x)
    assert range_check_enabled()
    with range_option(True):
        assert range_check_enabled()
        with pytest.raises(ValueError, match="outside"):
            check_images(x)
    with range_check(False), range_option(True):  # never re-enables an enclosing range_check(False)
        assert not range_check_enabled()
        check_images(x)
    with pytest.raises(ValueError, match="check_range must be True or False, got 0"):
        range_option(0)  # type: ignore[arg-type]
