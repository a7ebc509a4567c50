"""The evaluators against direct computations with the library pieces they wrap.

Each evaluator equals the certifier / worst_case_bounds + protocol attacks / attacks + the
functional metrics / PGD called directly; per-sample results do not depend on the batch size or
on how the indices are split (shards); params() tracks every result-changing parameter; a
BatchNorm model left in train mode gives the eval-mode results and gets its modes back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from robustattr.attacks import PGD, L2AttributionAttack, TopKAttack
from robustattr.attributions import IntegratedGradients, Saliency, sample_gaussian
from robustattr.bounds import REPEAT_STRIDE, worst_case_bounds
from robustattr.certify import UniformSmoothingCertifier
from robustattr.evaluation import (
    AttributionAttackEvaluator,
    BoundsEvaluator,
    CleanAccuracy,
    Evaluator,
    PGDAccuracy,
    SmoothingEvaluator,
)
from robustattr.metrics import TopKIntersection
from robustattr.metrics import functional as RF
from robustattr.models import SmallCNN, build_model, softplus_surrogate
from robustattr.utils import per_sample_noise

INDEX = torch.tensor([3, 10, 11, 25, 40, 41])


@pytest.fixture(scope="module")
def data() -> tuple[nn.Module, Tensor, Tensor]:
    """A tiny untrained max-pool ReLU SmallCNN and 6 digits."""
    from robustattr.data import load_digits_tensors

    torch.manual_seed(0)
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).eval()
    x, y = load_digits_tensors(28)
    return model, x[:6].clone(), y[:6].clone()


def _cheap() -> dict[str, Evaluator]:
    """One cheap instance of every evaluator (the contract, not the papers' budgets)."""
    return {
        "accuracy": CleanAccuracy(),
        "pgd_accuracy": PGDAccuracy(PGD(eps=0.1, step_size=0.03, steps=3), seed=5),
        "attribution_attack": AttributionAttackEvaluator(
            attacks={"topk": TopKAttack(Saliency(), eps=0.2, steps=2, step_size=0.05, k=30)}, seed=7
        ),
        "smoothing": SmoothingEvaluator(radius=0.3, n_samples=24, eps_grid=(1e-4, 1e-3), taus=(0.5, 0.9), seed=2, rows_per_forward=40),
        # tol below reach: every batch runs exactly `iters` Lanczos steps (batch-size independent)
        "bounds": BoundsEvaluator(norms=("l2",), eps=0.05, iters=8, tol=1e-12, attack_repeats=1, attack_steps=2, seed=1),
    }


def _run(ev: Evaluator, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, batch: int) -> dict[str, Tensor]:
    chunks: dict[str, list[Tensor]] = {}
    for s in range(0, x.shape[0], batch):
        out = ev.evaluate(model, x[s : s + batch], y[s : s + batch], index[s : s + batch])
        for k, v in out.items():
            chunks.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in chunks.items()}


def _assert_same(a: dict[str, Tensor], b: dict[str, Tensor], rtol: float = 1e-5, atol: float = 1e-7) -> None:
    assert list(a) == list(b)
    for k in a:
        if k == "seconds":
            continue
        if a[k].dtype in (torch.bool, torch.int64):
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k].double(), b[k].double(), rtol=rtol, atol=atol, equal_nan=True, msg=k)


# ---- direct computations -------------------------------------------------------------------
def test_clean_accuracy_is_argmax(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ev = CleanAccuracy()
    out = ev.evaluate(model, x, y, INDEX)
    pred = model(x).argmax(1)
    assert torch.equal(out["prediction"], pred) and torch.equal(out["label"], y)
    assert torch.equal(out["correct"], pred == y)
    assert ev.summarize(out) == {"accuracy": pytest.approx(float((pred == y).double().mean()))}


def test_pgd_accuracy_equals_pgd_with_per_sample_seeds(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    attack = PGD(eps=0.1, step_size=0.03, steps=3)
    out = PGDAccuracy(attack, seed=5).evaluate(model, x, y, INDEX)
    x_adv = attack(model, x, y, sample_seeds=INDEX + 5)
    assert not torch.equal(x_adv, attack(model, x, y, sample_seeds=INDEX + 6))  # the seed matters
    with torch.no_grad():
        clean, adv = model(x).argmax(1) == y, model(x_adv).argmax(1) == y
    assert torch.equal(out["correct"], clean)
    assert torch.equal(out["robust_correct"], clean & adv)
    s = PGDAccuracy(attack).summarize(out)
    assert s["robust_accuracy"] == pytest.approx(float((clean & adv).double().mean()))
    assert s["robust_accuracy"] <= s["accuracy"]


def test_attribution_attack_equals_attack_plus_functional_metrics(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    attack = TopKAttack(Saliency(), eps=0.2, steps=2, step_size=0.05, k=30)
    ev = AttributionAttackEvaluator(attacks={"topk": attack}, seed=7)
    out = ev.evaluate(model, x, y, INDEX)
    with torch.no_grad():
        pred = model(x).argmax(1)  # explain="pred"
    res = attack(model, x, pred, sample_seeds=(INDEX + 7) * 1009 + 0)
    g0, g1 = Saliency()(model, x, pred), Saliency()(model, res.x_adv, pred)
    a0, a1 = g0.abs().sum(1), g1.abs().sum(1)
    fwd, bwd = RF.lens_topk(a0, a1, 100, 3)
    ref = {
        "topk/success": res.success, "topk/skipped": res.skipped_misclassified, "topk/criterion": res.criterion.float(),
        "topk/topk": RF.topk_intersection(a0, a1, 100), "topk/lens_topk_fwd": fwd, "topk/lens_topk_bwd": bwd,
        "topk/lens_topk": (fwd + bwd) / 2, "topk/spearman": RF.spearman(a0, a1), "topk/kendall": RF.kendall_tau(a0, a1),
        "topk/cosine": RF.cosine_similarity(g0, g1),
    }
    assert set(out) == set(ref)
    _assert_same({k: out[k] for k in ref}, ref)
    assert not out["topk/skipped"].any()  # the predicted class is explained: nothing skipped
    s = ev.summarize(out)
    assert s["topk/attacked_frac"] == 1.0
    assert s["topk/kendall"] == pytest.approx(float(ref["topk/kendall"].double().mean()), rel=1e-6)
    assert s["topk/success_rate"] == pytest.approx(float(res.success.double().mean()))
    # explain="label": misclassified samples are skipped and leave the means
    lab = AttributionAttackEvaluator(attacks={"topk": attack}, explain="label", seed=7)
    out_l = lab.evaluate(model, x, y, INDEX)
    assert torch.equal(out_l["topk/skipped"], pred != y)
    keep = pred == y
    s_l = lab.summarize(out_l)
    assert s_l["topk/attacked_frac"] == pytest.approx(float(keep.double().mean()))
    expect = float(out_l["topk/topk"][keep].double().mean()) if keep.any() else math.nan
    assert s_l["topk/topk"] == pytest.approx(expect, nan_ok=True)


def test_attack_maps_are_the_evaluated_iterates(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ev = _cheap()["attribution_attack"]
    assert isinstance(ev, AttributionAttackEvaluator)
    out = ev.evaluate(model, x, y, INDEX)
    maps = ev.attack_maps(model, x[:2], y[:2], INDEX[:2])
    xs, a0, xa, a1 = maps["topk"]
    assert xs.shape == (2, 1, 28, 28) and a0.shape == a1.shape == (2, 28, 28) and xa.shape == xs.shape
    torch.testing.assert_close(RF.topk_intersection(a0, a1, 100), out["topk/topk"][:2])


def test_smoothing_equals_the_certifier(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    eps, taus = (1e-4, 1e-3), (0.5, 0.9)
    ev = SmoothingEvaluator(radius=0.3, n_samples=200, eps_grid=eps, taus=taus, seed=2)
    out = ev.evaluate(model, x, y, INDEX)
    cert = UniformSmoothingCertifier(radius=0.3, n_samples=200, eps_grid=eps, taus=taus, seed=2).certify(model, x, index=INDEX)
    assert torch.equal(out["prediction"], cert.y) and torch.equal(out["label"], y)
    torch.testing.assert_close(out["h_norm"], cert.h_norm)
    torch.testing.assert_close(out["h_norm_lower"], cert.h_norm_lower.double())
    for j, e in enumerate(eps):
        torch.testing.assert_close(out[f"cos@eps={e:g}"], cert.cos_lower[:, j], equal_nan=True)
    for k, t in enumerate(taus):
        torch.testing.assert_close(out[f"eps_max@tau={t:g}"], cert.eps_max[:, k], equal_nan=True)
    cos = cert.cos_lower.numpy()
    assert np.isfinite(cos[:, 0]).any(), "the setting should certify some samples at eps=1e-4"
    s = ev.summarize(out)
    for j, e in enumerate(eps):
        srt = np.sort(np.nan_to_num(cos[:, j], nan=-np.inf))[(len(cos) - 1) // 2]  # lower median, NaN lowest
        assert s[f"cos_median@eps={e:g}"] == pytest.approx(srt if np.isfinite(srt) else math.nan, nan_ok=True)
        for t in taus:
            assert s[f"frac_certified@tau={t:g},eps={e:g}"] == pytest.approx(np.mean(np.nan_to_num(cos[:, j], nan=-1) >= t))
    em = np.nan_to_num(cert.eps_max.numpy(), nan=0.0)
    for k, t in enumerate(taus):
        assert s[f"eps_max_median@tau={t:g}"] == pytest.approx(np.sort(em[:, k])[(len(em) - 1) // 2])
    assert s["accuracy"] == pytest.approx(float((cert.y == y).double().mean()))


def test_smoothing_summary_not_certified_medians() -> None:
    ev = SmoothingEvaluator(eps_grid=(1e-3,), taus=(0.5,))
    nan = math.nan

    def results(cos: list[float]) -> dict[str, Tensor]:
        n = len(cos)
        return {
            "label": torch.zeros(n, dtype=torch.int64), "prediction": torch.zeros(n, dtype=torch.int64),
            "h_norm": torch.ones(n, dtype=torch.float64), "h_norm_lower": torch.ones(n, dtype=torch.float64),
            "cos@eps=0.001": torch.tensor(cos, dtype=torch.float64),
            "eps_max@tau=0.5": torch.tensor([nan if math.isnan(c) else 0.01 for c in cos], dtype=torch.float64),
        }

    s = ev.summarize(results([nan, 0.5, nan, 0.9, nan]))  # the median sample is not certified
    assert math.isnan(s["cos_median@eps=0.001"]) and s["eps_max_median@tau=0.5"] == 0.0
    assert s["frac_certified@tau=0.5,eps=0.001"] == pytest.approx(0.4)
    s = ev.summarize(results([nan, 0.7, 0.5, 0.9]))
    assert s["cos_median@eps=0.001"] == 0.5 and s["eps_max_median@tau=0.5"] == 0.01


@pytest.mark.filterwarnings("ignore:d=784")
def test_bounds_equal_worst_case_bounds_and_protocol_attacks(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    x, y, index = x[:3], y[:3], INDEX[:3]
    eps = {"l2": 0.05, "linf": 0.01}
    ev = BoundsEvaluator(norms=("l2", "linf"), eps=eps, iters=15, full_jacobian_limit=100, attack_repeats=1, attack_steps=2, topk=30, seed=1)
    out = ev.evaluate(model, x, y, index)
    assert list(out) == ev.columns()
    sur = softplus_surrogate(model, 10.0, smooth_pool=True)  # the default surrogate smooths max-pooling too
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in sur.modules())
    start = per_sample_noise(sample_gaussian, index + 1, 1, (1, 28, 28), "cpu", sigma=1.0)[0]
    g0 = Saliency()(sur, x, y)
    attacks = {
        "l2": L2AttributionAttack(Saliency(), 0.05, steps=2, step_size=2.5 * 0.05 / 2, objective="euclidean", surrogate_beta=None),
        "linf": TopKAttack(Saliency(), eps=0.01, steps=2, step_size=2.5 * 0.01 / 2, k=30, surrogate_beta=None, random_start=False),
    }
    for norm in ("l2", "linf"):
        b = worst_case_bounds(Saliency(), sur, x, y, eps[norm], norm=norm, iters=15, start=start,
                              generator=torch.Generator().manual_seed(1), full_jacobian_limit=100)
        torch.testing.assert_close(out["xi_max"], b.xi_max, rtol=1e-4, atol=0)
        for col in ("T_e", "T_e_prime", "c", "T_c_deg"):
            torch.testing.assert_close(out[f"{norm}/{col}"], getattr(b, col), rtol=1e-4, atol=1e-7, equal_nan=True, msg=f"{norm}/{col}")
        assert torch.equal(out[f"{norm}/vacuous"], b.vacuous)
        assert torch.equal(out[f"{norm}/label_kept_pm"], b.label_kept_pos | b.label_kept_neg)
        res = attacks[norm](sur, x, y, sample_seeds=1 + 0 * REPEAT_STRIDE + index)
        dist = (Saliency()(sur, res.x_adv, y) - g0).flatten(1).norm(dim=1)
        torch.testing.assert_close(out[f"{norm}/dist_max"], dist, rtol=1e-4, atol=1e-7)
        assert torch.equal(out[f"{norm}/skipped"], res.skipped_misclassified)
    s = ev.summarize(out)
    keep = ~out["l2/skipped"]
    for norm in ("l2", "linf"):
        d, tp = out[f"{norm}/dist_max"][keep].double(), out[f"{norm}/T_e_prime"][keep].double()
        assert s[f"{norm}/frac_outside_T_e_prime"] == pytest.approx(float((d > tp).double().mean()), nan_ok=True)
        assert s[f"{norm}/max_rel_excess_T_e_prime"] == pytest.approx(float(((d - tp) / tp).max()), rel=1e-9, nan_ok=True)
        assert s[f"{norm}/tightness"] == pytest.approx(float((out[f"{norm}/T_e"][keep].double() - d).min()), nan_ok=True)
    assert s["n"] + s["n_skipped"] == 3
    assert s["xi_max_median"] == pytest.approx(float(out["xi_max"][keep].double().median()), nan_ok=True)


def test_bounds_without_pool_smoothing_match_the_relu_only_surrogate(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ev = BoundsEvaluator(eps=0.05, iters=15, smooth_pool=False, seed=1)
    with pytest.warns(UserWarning, match="max pooling"):
        out = ev.evaluate(model, x[:2], y[:2], INDEX[:2])
    start = per_sample_noise(sample_gaussian, INDEX[:2] + 1, 1, (1, 28, 28), "cpu", sigma=1.0)[0]
    with pytest.warns(UserWarning):
        b = worst_case_bounds(Saliency(), model, x[:2], y[:2], 0.05, iters=15, start=start, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out["T_e"], b.T_e, rtol=1e-4, atol=0)
    assert list(out) == ["xi_max", "g_norm", "T_e", "T_e_prime", "c", "T_c_deg", "vacuous"]


# ---- batching, shards, columns ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["accuracy", "pgd_accuracy", "attribution_attack", "smoothing", "bounds"])
def test_results_do_not_depend_on_batch_size_or_shards(data, name: str) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ev = _cheap()[name]
    full = _run(ev, model, x, y, INDEX, batch=6)
    assert list(full) == ev.columns(10)
    assert all(v.shape == (6,) for v in full.values())
    _assert_same(full, _run(ev, model, x, y, INDEX, batch=4), rtol=1e-4)
    # two "ranks" with interleaved shards, each evaluated separately, put back by position
    parts = [[0, 3, 5], [1, 2, 4]]
    pieces = [_run(ev, model, x[p], y[p], INDEX[p], batch=3) for p in parts]
    merged = {k: torch.empty_like(full[k]) for k in full}
    for p, piece in zip(parts, pieces, strict=True):
        for k in merged:
            merged[k][p] = piece[k]
    _assert_same(full, merged, rtol=1e-4)


# ---- params ----------------------------------------------------------------------------------
def _params(ev: Evaluator) -> Any:
    p = ev.params()
    json.dumps(p)  # JSON-serialisable
    return p


@pytest.mark.parametrize(
    ("make", "changes"),
    [
        (lambda **k: PGDAccuracy(PGD(**{"eps": 0.1, **k})), [{"eps": 0.2}, {"steps": 5}, {"step_size": 0.02}]),
        (lambda **k: SmoothingEvaluator(**k), [{"radius": 0.3}, {"n_samples": 10}, {"alpha": 0.01}, {"eps_grid": (1e-3,)},
                                               {"taus": (0.5,)}, {"seed": 1}, {"bound": "paper"}, {"bounding": "clip"},
                                               {"attribution": IntegratedGradients(steps=8)}]),
        (lambda **k: AttributionAttackEvaluator(**k), [
            {"attacks": {"topk": TopKAttack(Saliency(), eps=0.1, steps=20, step_size=0.03, k=100)}},
            {"attacks": {"topk": TopKAttack(IntegratedGradients(steps=4), eps=0.3, steps=20, step_size=0.03, k=100)}},
            {"metrics": ("topk",)}, {"metrics": (TopKIntersection(k=50), "lens_topk", "spearman", "kendall", "cosine")},
            {"explain": "label"}, {"seed": 3}, {"attribution": IntegratedGradients(steps=4)},
        ]),
        (lambda **k: BoundsEvaluator(**k), [{"eps": 0.2}, {"norms": ("linf",)}, {"iters": 50}, {"tol": 1e-3},
                                            {"surrogate_beta": 5.0}, {"smooth_pool": False}, {"full_jacobian_limit": 10},
                                            {"attack_repeats": 2}, {"seed": 2}, {"attribution": IntegratedGradients(steps=4)}]),
    ],
    ids=["pgd_accuracy", "smoothing", "attribution_attack", "bounds"],
)
def test_params_change_with_every_result_changing_parameter(make, changes) -> None:  # type: ignore[no-untyped-def]
    base = _params(make())
    assert _params(make()) == base
    for change in changes:
        assert _params(make(**change)) != base, change


def test_params_ignore_speed_only_settings_and_record_nested_parameters() -> None:
    assert _params(SmoothingEvaluator(rows_per_forward=7)) == _params(SmoothingEvaluator())
    p = _params(SmoothingEvaluator(attribution=IntegratedGradients(steps=8)))
    assert p["attribution"]["steps"] == 8
    p = _params(BoundsEvaluator(attack_repeats=1, attack_steps=3))
    assert p["attack_steps"] == {"l2": 3}
    p = _params(AttributionAttackEvaluator(metrics=(TopKIntersection(k=50),)))
    assert p["metrics"] == [{"class": "robustattr.metrics.classes.TopKIntersection", "name": "topk", "k": 50}]


# ---- modes ----------------------------------------------------------------------------------
def _bn_model() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 13 * 13, 10)
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("name", ["accuracy", "pgd_accuracy", "attribution_attack", "smoothing", "bounds"])
def test_batchnorm_model_in_train_mode_gives_eval_results_and_keeps_modes(data, name: str) -> None:  # type: ignore[no-untyped-def]
    _, x, y = data
    ev = _cheap()[name]
    net = _bn_model().eval()
    ref = ev.evaluate(net, x, y, INDEX)
    net.train()
    net[5].eval()  # a mixed tree
    modes = [m.training for m in net.modules()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x0 = x.clone()
    out = ev.evaluate(net, x, y, INDEX)
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())  # BatchNorm statistics untouched
    assert torch.equal(x, x0) and x.grad is None
    _assert_same(ref, out)


# ---- warnings and validation ------------------------------------------------------------------
def test_smoothing_warnings() -> None:
    assert SmoothingEvaluator().warnings((1, 28, 28)) == []
    (w,) = SmoothingEvaluator(radius=0.01, eps_grid=(0.05, 0.1)).warnings((1, 28, 28))
    assert "2*radius" in w
    (w,) = SmoothingEvaluator(n_samples=10).warnings((1, 28, 28))
    assert "margin" in w and "nothing can be certified" in w
    (w,) = SmoothingEvaluator(radius=0.25, eps_grid=(0.2,)).warnings((1, 28, 28))
    assert "certifies no eps" in w


def test_smoothing_margin_is_passed_to_the_certifier_when_it_has_margin_methods() -> None:
    import inspect

    if "margin" in inspect.signature(UniformSmoothingCertifier).parameters:
        assert SmoothingEvaluator(margin="hoeffding").certifier.margin == "hoeffding"
        assert SmoothingEvaluator(margin="hoeffding").params()["margin_method"] == "hoeffding"
    else:  # the certifier knows the Hoeffding margin only
        assert SmoothingEvaluator(margin="auto").params()["margin_method"] == "hoeffding"
        with pytest.raises(ValueError, match="bernstein"):
            SmoothingEvaluator(margin="bernstein")
    with pytest.raises(ValueError, match="margin"):
        SmoothingEvaluator(margin="chernoff")


def test_bounds_warnings_and_validation() -> None:
    assert BoundsEvaluator().warnings((1, 28, 28)) == []
    w = BoundsEvaluator(norms=("linf",), eps=0.01, full_jacobian_limit=100, smooth_pool=False).warnings((1, 28, 28))
    assert len(w) == 2 and "sqrt(d)" in w[0] and "smooth_pool" in w[1]
    with pytest.raises(ValueError, match="eps"):
        BoundsEvaluator(norms=("l2", "linf"), eps={"l2": 0.1, "L2": 0.1})
    with pytest.raises(ValueError, match="attack_repeats"):
        BoundsEvaluator(attack_repeats=-1)


def test_bad_inputs_are_refused(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        CleanAccuracy().evaluate(model, x * 2, y, INDEX)
    with pytest.raises(ValueError, match="index"):
        CleanAccuracy().evaluate(model, x, y, INDEX[:3])
    with pytest.raises(ValueError, match="attacks"):
        AttributionAttackEvaluator(attacks={"topk": {"class_path": "robustattr.attacks.TopKAttack"}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="PGD"):
        PGDAccuracy(attack=TopKAttack(Saliency()))  # type: ignore[arg-type]
