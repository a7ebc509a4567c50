"""Issue cases of the input contract for attacks, and eval-mode evaluation of a BatchNorm model."""

from __future__ import annotations

import pytest
import torch

from robustattr.attacks import PGD, L2AttributionAttack, ManipulateAttack, TopKAttack
from robustattr.attributions import Saliency
from tests.helpers import tiny_batch, tiny_cnn, vector_output_model

ATTACKS = {
    "pgd": lambda: PGD(eps=0.1, step_size=0.05, steps=2),
    "l2_attribution": lambda: L2AttributionAttack(Saliency(), eps=0.1, steps=2, seed=0),
    "topk": lambda: TopKAttack(Saliency(), eps=0.1, steps=2, k=5),
    "manipulate": lambda: ManipulateAttack(Saliency(), steps=2),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("where", ["pixel", "image"])
def test_nan_input_raises(name: str, where: str) -> None:
    """Before: NaN passed through (PGD returned NaN images, attribution attacks 'attacked' NaN)."""
    x, y = tiny_batch()
    if where == "pixel":
        x[3, 0, 1, 1] = float("nan")
    else:
        x[3] = float("nan")
    with pytest.raises(ValueError, match=r"^x: samples \[3\] contain NaN/inf$"):
        ATTACKS[name]()(tiny_cnn(), x, y)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_vector_output_and_bad_labels(name: str) -> None:
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=r"^model output has shape \[4\], expected \[B, K\] = \[4, K\]$"):
        ATTACKS[name]()(vector_output_model(), x, y)
    y[0] = -1
    with pytest.raises(ValueError, match=r"^y: samples \[0\] have class -1 outside \[0, 10\)$"):
        ATTACKS[name]()(tiny_cnn(), x, y)


def test_attribution_attack_on_batchnorm_model_uses_eval_mode() -> None:
    """A BatchNorm model left in train mode: same result as in eval mode, for any batch split; modes restored."""
    x, y = tiny_batch(6)
    model = tiny_cnn(batchnorm=True)
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = L2AttributionAttack(Saliency(), eps=0.2, steps=3, objective="euclidean")
    seeds = torch.arange(6) + 100
    ref = attack(model.eval(), x, y, sample_seeds=seeds)
    model.train()
    model[0].eval()  # mixed tree
    modes = [m.training for m in model.modules()]
    full = attack(model, x, y, sample_seeds=seeds)
    parts = [attack(model, x[i : i + 2], y[i : i + 2], sample_seeds=seeds[i : i + 2]) for i in range(0, 6, 2)]
    assert [m.training for m in model.modules()] == modes
    torch.testing.assert_close(full.x_adv, ref.x_adv, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([p.x_adv for p in parts]), ref.x_adv, rtol=0, atol=1e-6)
    torch.testing.assert_close(full.criterion, ref.criterion, rtol=1e-5, atol=1e-7)
    assert ref.success.any()  # the attack did something
