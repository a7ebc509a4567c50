"""BudgetWarmup: the linear ε ramp reaches the inner maximisation of every budgeted objective."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from robustattr.data.digits import load_digits_tensors
from robustattr.lightning import RobustClassifier
from robustattr.lightning.schedules import BudgetWarmup, warmup_fraction
from robustattr.losses import (
    ARTLoss,
    IGNormLoss,
    IGRLoss,
    PGDAdversarialLoss,
    SSRLoss,
    StandardLoss,
    TRADESLoss,
)
from robustattr.losses.base import LossOutput
from robustattr.models import SmallCNN, build_model


def _digits(n: int) -> tuple[Tensor, Tensor]:
    x, y = load_digits_tensors(28)
    return x[:n].clone(), y[:n].clone()


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(SmallCNN(width=4, hidden=16))


class _Recorder:
    """Wraps a budgeted objective and records (eps, step_size) at every call."""

    def __init__(self, inner: PGDAdversarialLoss) -> None:
        self.inner, self.seen = inner, []

    @property
    def eps(self) -> float:
        return self.inner.eps

    @eps.setter
    def eps(self, v: float) -> None:
        self.inner.eps = v

    @property
    def step_size(self) -> float:
        return self.inner.step_size

    @step_size.setter
    def step_size(self, v: float) -> None:
        self.inner.step_size = v

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> LossOutput:
        self.seen.append((self.inner.attack.eps, self.inner.attack.step_size))
        return self.inner(model, x, y)


def _fit(loss: object, callback: BudgetWarmup, epochs: int, batches: int = 4) -> RobustClassifier:
    x, y = _digits(8 * batches)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    module = RobustClassifier(_tiny_model(), loss=loss)  # type: ignore[arg-type]
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, inference_mode=False, callbacks=[callback],
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    return module


# ---- the schedule as a function -------------------------------------------------------
def test_warmup_fraction_closed_form() -> None:
    assert warmup_fraction(0.0, 2.0) == 0.0
    assert warmup_fraction(0.5, 2.0) == pytest.approx(0.25)
    assert warmup_fraction(2.0, 2.0) == 1.0
    assert warmup_fraction(7.3, 2.0) == 1.0
    assert warmup_fraction(1.0, 2.0, start_fraction=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert warmup_fraction(0.0, 0.5, start_fraction=1.0) == 1.0


@pytest.mark.parametrize(
    "kwargs, name",
    [({"warmup_epochs": 0.0}, "warmup_epochs"), ({"warmup_epochs": float("inf")}, "warmup_epochs"),
     ({"start_fraction": -0.1}, "start_fraction"), ({"start_fraction": 1.5}, "start_fraction")],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BudgetWarmup(**kwargs)
    with pytest.raises(ValueError, match=name):
        warmup_fraction(0.0, kwargs.get("warmup_epochs", 1.0), kwargs.get("start_fraction", 0.0))


# ---- the callback in a real Trainer ---------------------------------------------------
def test_ramp_per_step_then_constant_and_step_size_scaled() -> None:
    """4 batches/epoch, E_w = 1.5, s = 0.2: ε_t = ε·(0.2 + 0.8·min(1, (e + (b+1)/4)/1.5))."""
    eps, alpha = 0.3, 0.06
    rec = _Recorder(PGDAdversarialLoss(eps=eps, step_size=alpha, steps=1, noise_seed=0))
    _fit(rec, BudgetWarmup(warmup_epochs=1.5, start_fraction=0.2), epochs=3)
    progress = [e + (b + 1) / 4 for e in range(3) for b in range(4)]
    expect = [eps * (0.2 + 0.8 * min(1.0, p / 1.5)) for p in progress]
    got_eps = [s[0] for s in rec.seen]
    got_alpha = [s[1] for s in rec.seen]
    assert got_eps == pytest.approx(expect, rel=1e-12)
    assert got_alpha == pytest.approx([e * alpha / eps for e in expect], rel=1e-12)
    assert got_eps[0] > 0 and max(got_eps) == pytest.approx(eps)
    assert rec.inner.eps == eps and rec.inner.step_size == alpha


def test_fit_ending_inside_the_ramp_restores_the_configured_budget() -> None:
    loss = TRADESLoss(eps=0.25, step_size=0.05, steps=1, noise_seed=0)
    _fit(loss, BudgetWarmup(warmup_epochs=4.0, scale_step_size=False), epochs=1, batches=2)
    assert loss.eps == 0.25 and loss.inner.eps == 0.25 and loss.step_size == 0.05


@pytest.mark.parametrize("loss", [StandardLoss(), SSRLoss()], ids=["standard", "ssr"])
def test_objective_without_budget_is_rejected(loss: object) -> None:
    with pytest.raises(ValueError, match="eps"):
        _fit(loss, BudgetWarmup(), epochs=1, batches=1)


# ---- the settable budget reaches every inner maximisation ------------------------------
def _inner_points(loss: object, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    if isinstance(loss, TRADESLoss):
        return loss.inner(model, x)
    return loss.attack(model, x, y)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "make",
    [
        lambda: PGDAdversarialLoss(eps=0.3, step_size=0.1, steps=3, noise_seed=0),
        lambda: TRADESLoss(eps=0.3, step_size=0.1, steps=3, noise_seed=0),
        lambda: IGNormLoss(eps=0.3, step_size=0.1, steps=2, ig_steps=4, approx=2, noise_seed=0),
        lambda: IGNormLoss(sum_norm=True, eps=0.3, step_size=0.1, steps=2, ig_steps=4, approx=2, noise_seed=0),
        lambda: ARTLoss(eps=0.3, step_size=0.1, steps=2, top_k=50),
        lambda: IGRLoss(eps=0.3, step_size=0.1, steps=2, inner_ig_steps=2, noise_seed=0),
        lambda: IGRLoss(base="trades", eps=0.3, step_size=0.1, steps=3, noise_seed=0),
    ],
    ids=["pgd", "trades", "ig_norm", "ig_sum_norm", "art", "igr", "trades_igr"],
)
def test_set_eps_bounds_the_inner_maximisation(make) -> None:  # type: ignore[no-untyped-def]
    """After ``loss.eps = 0.04`` every inner point lies in the new ℓ∞ ball and uses it (sign steps reach its faces)."""
    x, y = _digits(6)
    model = _tiny_model().eval()
    loss = make()
    loss.eps, loss.step_size = 0.04, 0.04
    dist = (_inner_points(loss, model, x, y) - x).flatten(1).abs().amax(dim=1)
    assert (dist <= 0.04 + 1e-6).all()
    assert (dist >= 0.04 - 1e-6).all()  # a full sign step of 0.04 from inside the ball hits its face
    with pytest.raises(ValueError, match="eps"):
        loss.eps = 0.0
    with pytest.raises(ValueError, match="step_size"):
        loss.step_size = -1.0
