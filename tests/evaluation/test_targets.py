"""ObjectiveTargets ('targets'): each objective's own target, against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.special import rel_entr
from torch import nn

from robustattr.attacks.pgd import PGD
from robustattr.evaluation import TARGETS, ObjectiveTargets, describe
from robustattr.losses.common import TradesInner
from robustattr.registry import build
from tests.helpers import tiny_cnn

SMALL = {"eps": 0.1, "steps": 3, "ig_steps": 4, "approx": 2, "inner_ig_steps": 2, "art_top_k": 10}


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 3, 7, 9]), torch.tensor([5, 11, 2, 40])


def relu_mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10)).eval()


def test_ssr_lambda_max_equals_the_largest_eigenvalue_of_the_autograd_ce_hessian(batch) -> None:  # type: ignore[no-untyped-def]
    x, y, idx = batch
    model = relu_mlp().double()
    got = ObjectiveTargets(targets=["ssr_lambda_max"]).evaluate(model, x.double(), y, idx)["ssr_lambda_max"]
    for i in range(x.shape[0]):
        # piecewise-linear net: the CE's input Hessian is W (diag p − ppᵀ) Wᵀ a.e.; autograd gives it exactly
        h = torch.autograd.functional.hessian(lambda z, i=i: F.cross_entropy(model(z.view(1, 1, 8, 8)), y[i : i + 1]), x[i].double().flatten())
        assert got[i].item() == pytest.approx(torch.linalg.eigvalsh(h)[-1].item(), rel=1e-8, abs=1e-12)


def test_pgd_robust_is_pgd_with_per_sample_seeds_and_trades_kl_is_the_kl_at_the_trades_point(batch) -> None:  # type: ignore[no-untyped-def]
    x, y, idx = batch
    model = tiny_cnn()
    ev = ObjectiveTargets(targets=["pgd_robust", "trades_kl"], seed=4, **SMALL)
    out = ev.evaluate(model, x, y, idx)
    x_adv = PGD(eps=0.1, step_size=2.5 * 0.1 / 3, steps=3, random_start=True)(model, x, y, sample_seeds=idx + 4)
    with torch.no_grad():
        ref = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
    assert torch.equal(out["pgd_robust"], ref)
    x_t = TradesInner(0.1, 2.5 * 0.1 / 3, 3, "linf", noise_seed=4)(model, x)
    assert (x_t - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        p, q = F.softmax(model(x).double(), 1), F.softmax(model(x_t).double(), 1)
    ref_kl = rel_entr(p.numpy(), q.numpy()).sum(1)
    assert out["trades_kl"].numpy() == pytest.approx(ref_kl, rel=1e-4, abs=1e-9)
    assert (out["trades_kl"] > 0).all()  # the ascent moved away from p(x)


def test_all_targets_do_not_depend_on_batching_and_keep_inputs_and_modes(batch) -> None:  # type: ignore[no-untyped-def]
    x, y, idx = batch
    model = tiny_cnn(batchnorm=True).train()
    ev = build("evaluator", "targets", **SMALL)
    x0 = x.clone()
    full = ev.evaluate(model, x, y, idx)
    assert model.training and torch.equal(x, x0) and x.grad is None
    halves = [ev.evaluate(model, x[s], y[s], idx[s]) for s in (slice(0, 1), slice(1, 4))]
    assert list(full) == list(TARGETS)
    for name in TARGETS:
        joined = torch.cat([h[name] for h in halves])
        assert full[name].shape == (4,)
        if name == "pgd_robust":
            assert full[name].dtype == torch.bool and torch.equal(full[name], joined)
        else:
            assert full[name].dtype == torch.float64
            torch.testing.assert_close(full[name], joined, rtol=1e-4, atol=1e-6)
    assert ((full["igr_ig_cos"] >= -1 - 1e-6) & (full["igr_ig_cos"] <= 1 + 1e-6)).all()
    assert (full["ig_norm"] >= 0).all() and (full["ssr_lambda_max"] >= 0).all()


def test_summary_means_and_lower_medians() -> None:
    ev = ObjectiveTargets(targets=["pgd_robust", "trades_kl"])
    s = ev.summarize({"pgd_robust": torch.tensor([True, False, True, True]),
                      "trades_kl": torch.tensor([0.4, 0.1, 0.3, 0.2], dtype=torch.float64)})
    assert s == pytest.approx({"pgd_robust": 0.75, "trades_kl": 0.25, "trades_kl_median": 0.2})


def test_params_and_validation() -> None:
    a, b = ObjectiveTargets(), ObjectiveTargets(eps=0.2)
    assert a.params() != b.params() and a.params()["step_size"] == pytest.approx(0.025)
    assert ObjectiveTargets(targets=["ssr_lambda_max"]).columns() == ["ssr_lambda_max"]
    for kwargs, word in [({"targets": ["nope"]}, "targets"), ({"targets": []}, "targets"),
                         ({"targets": ["ig_norm", "ig_norm"]}, "targets"), ({"eps": 0.0}, "eps"),
                         ({"steps": 0}, "steps"), ({"norm": "l2"}, "norm"), ({"ig_steps": 4, "approx": 3}, "approx")]:
        with pytest.raises(ValueError, match=word):
            ObjectiveTargets(**kwargs)


def test_describe_includes_values_of_settable_data_descriptors() -> None:
    inner = TradesInner(0.3, 0.01, 5, "linf")
    inner.eps = 0.05
    d = describe(inner)
    assert d["eps"] == 0.05 and d["step_size"] == 0.01 and d["steps"] == 5
