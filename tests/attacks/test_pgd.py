"""PGD (robustattr.attacks.pgd): closed-form optima on linear models, budgets, modes, restarts, noise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustattr.attacks import PGD
from robustattr.attacks.pgd import draw_noise, eval_mode, project, sample_keys


class _Linear2(nn.Module):
    """f(x) = W flat(x) + b with 2 classes; CE is increasing in (w_other − w_y)ᵀx."""

    def __init__(self, d: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.lin = nn.Linear(d, 2, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, d, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _interior_batch(B: int = 6, d: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(B, 1, 3, d // 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (B,), generator=g)
    return x, y


def test_linf_reaches_closed_form_vertex_on_linear_model() -> None:
    x, y = _interior_batch()
    model = _Linear2(12)
    w = model.lin.weight.detach()
    direction = (w[1 - y] - w[y]).view_as(x)  # ∇_x of the CE is a positive multiple of this
    eps = 0.1
    x_adv = PGD(eps=eps, step_size=0.02, steps=20, norm="linf", noise_seed=0)(model, x, y)
    expected = x + eps * direction.sign()  # vertex of the cube; inside [0,1] since x ∈ [0.3, 0.7]
    torch.testing.assert_close(x_adv, expected, atol=1e-12, rtol=0)


def test_l2_reaches_closed_form_on_linear_model() -> None:
    x, y = _interior_batch()
    model = _Linear2(12)
    w = model.lin.weight.detach()
    direction = (w[1 - y] - w[y]).view_as(x)
    eps = 0.15
    x_adv = PGD(eps=eps, step_size=0.05, steps=5, norm="l2", random_start=False)(model, x, y)
    unit = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_adv, x + eps * unit, atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_stays_in_ball_and_box_and_increases_ce(small_cnn: nn.Module, digits_batch, norm: str, eps: float) -> None:
    x, y = digits_batch
    x0 = x.clone()
    attack = PGD(eps=eps, step_size=eps / 4, steps=8, norm=norm, noise_seed=5)
    x_adv = attack(small_cnn, x, y)
    assert torch.equal(x, x0) and x.grad is None  # input untouched
    assert not x_adv.requires_grad and x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (dist <= eps + 1e-6).all()
    # attack sanity: CE after the ascent is higher than at the (same) random start
    start = project(attack.start(x), x, eps, norm)
    with torch.no_grad():
        ce_start = F.cross_entropy(small_cnn(start), y, reduction="none")
        ce_adv = F.cross_entropy(small_cnn(x_adv), y, reduction="none")
    assert ce_adv.mean() > ce_start.mean()
    assert (ce_adv >= ce_start - 1e-4).float().mean() >= 0.9


class _ModeProbe(nn.Module):
    """Records self.training at every forward; has a BatchNorm so eval mode matters."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.fc = nn.Linear(784, 10)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.fc(self.bn(x).flatten(1))


def test_pgd_runs_in_eval_mode_and_restores_mode(digits_batch) -> None:
    x, y = digits_batch
    model = _ModeProbe().train()
    stats = model.bn.running_mean.clone()
    PGD(eps=0.1, step_size=0.05, steps=3)(model, x, y)
    assert model.seen and not any(model.seen)  # every forward in eval mode
    assert model.training and model.bn.training  # restored
    assert torch.equal(model.bn.running_mean, stats)  # BatchNorm statistics untouched


def test_eval_mode_restores_mixed_modes() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    model[1].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training


def test_restarts_keep_per_sample_best(small_cnn: nn.Module, digits_batch) -> None:
    x, y = digits_batch
    kw = dict(eps=0.1, step_size=0.03, steps=3)
    best = PGD(restarts=3, noise_seed=11, **kw)(small_cnn, x, y)
    with torch.no_grad():
        singles = torch.stack(
            [F.cross_entropy(small_cnn(PGD(noise_seed=11 + 7919 * r, **kw)(small_cnn, x, y)), y, reduction="none") for r in range(3)]
        )
        ce_best = F.cross_entropy(small_cnn(best), y, reduction="none")
    torch.testing.assert_close(ce_best, singles.max(dim=0).values)


def test_seeded_noise_is_per_sample_and_batch_independent() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    full = draw_noise(x, "l2", 0.5, noise_seed=3)
    perm = torch.tensor([4, 0, 5])
    part = draw_noise(x[perm], "l2", 0.5, noise_seed=3)
    torch.testing.assert_close(part, full[perm], rtol=0, atol=0)
    assert (full.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()
    cube = draw_noise(x, "linf", 0.2, noise_seed=3)
    assert cube.abs().max() <= 0.2
    assert sample_keys(x).unique().numel() == 6
    assert not torch.equal(draw_noise(x, "gaussian", 1.0, 3), draw_noise(x, "gaussian", 1.0, 4))


@pytest.mark.parametrize(
    "kwargs,name",
    [({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"), ({"steps": 0}, "steps"), ({"step_size": 0}, "step_size"),
     ({"norm": "l1"}, "norm"), ({"restarts": 0}, "restarts")],
)
def test_invalid_hyperparameters_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PGD(**kwargs)


def test_pgd_under_inference_mode_raises_clear_error(small_cnn: nn.Module, digits_batch) -> None:
    x, y = digits_batch
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        PGD(eps=0.1, step_size=0.05, steps=1)(small_cnn, x, y)
