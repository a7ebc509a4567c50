"""Quantus-style robustness metrics against Quantus 0.6 on the same model, attribution and perturbations.

Quantus draws its own perturbations; a recorder around its perturbation function captures
them and robustattr receives exactly those inputs through its public ``x_perturbed`` hook.
Quantus normalises by the maximum over the whole batch unless ``normalise_axes`` is given;
robustattr normalises per sample, so the comparisons pass ``normalise_axes=[1, 2, 3]`` (and
one test shows that Quantus's default equals robustattr when Quantus's batches hold one
sample). Values must agree to 1e-5 relative, NaNs at the same places.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from robustattr import registry
from robustattr.attributions import Attribution, InputXGradient, IntegratedGradients, Saliency
from robustattr.data import load_digits_tensors
from robustattr.metrics import AttributionMetric
from robustattr.metrics.robustness import (
    AvgSensitivity,
    Consistency,
    Continuity,
    GaussianNoise,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    RobustnessMetric,
    UniformNoise,
    default_representation_layers,
    functional,
    translate_x,
)
from robustattr.models import SmallCNN, TimmBackbone, build_model
from robustattr.utils import range_check

quantus = pytest.importorskip("quantus")  # dev dependency: the reference implementation
PF = pytest.importorskip("quantus.functions.perturb_func")

pytestmark = pytest.mark.filterwarnings("ignore")


def _smallcnn() -> tuple[nn.Module, Tensor, Tensor]:
    """SmallCNN on 6 digits with a 1% jitter: no exactly constant regions, hence no max-pool ties
    (which batch-size dependent float rounding could break differently in the two libraries)."""
    torch.manual_seed(0)
    model = build_model(SmallCNN(), (0.3053,), (0.3247,)).eval()
    x, y = load_digits_tensors(28)
    x = (x[:6] + 0.01 * torch.rand(x[:6].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return model, x, y[:6].clone()


def _resnet18() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = build_model(TimmBackbone("resnet18", num_classes=10, cifar_stem=True), (0.5,) * 3, (0.25,) * 3).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(2, 3, 8, 8, generator=g), torch.tensor([3, 7])


MODELS = {"smallcnn": _smallcnn, "resnet18": _resnet18}
ATTRIBUTIONS: dict[str, Callable[[], Attribution]] = {
    "saliency": Saliency,
    "ig": lambda: IntegratedGradients(steps=4, baseline=0.1),
}
PER_SAMPLE_MAX = {"normalise_func_kwargs": {"normalise_axes": [1, 2, 3]}}


def _explain_func(att: Attribution) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` that runs the robustattr attribution (same values on both sides)."""

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        # Quantus perturbs with unclipped noise, so its batches may leave [0, 1]: the reference
        # side explains them as given (robustattr's metrics do the same internally).
        with range_check(False):
            return att(model, torch.as_tensor(inputs), torch.as_tensor(targets)).detach().numpy()

    return explain


class _Recorder:
    """Wraps a Quantus batch perturbation function and keeps every perturbed batch it returns."""

    def __init__(self, fn: Callable[..., np.ndarray]) -> None:
        self.fn, self.batches = fn, []  # type: ignore[var-annotated]

    def __call__(self, arr: np.ndarray, indices: np.ndarray, **kw: Any) -> np.ndarray:
        out = self.fn(arr=arr, indices=indices, **kw)
        self.batches.append(out.copy())
        return out

    def x_perturbed(self, x: Tensor) -> Tensor:
        """``[n, B, C, H, W]`` (one Quantus batch of B per perturbation step)."""
        return torch.as_tensor(np.stack(self.batches)).view(len(self.batches), *x.shape)


def _quantus(metric: Any, model: nn.Module, x: Tensor, y: Tensor, att: Attribution, batch_size: int | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=_explain_func(att),
                     batch_size=batch_size or x.shape[0])
    return np.asarray(out, dtype=np.float64)


def _assert_same(ours: Tensor, ref: np.ndarray, rtol: float = 1e-5) -> None:
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=rtol, atol=0, equal_nan=True)


# --------------------------------------------------------------------------- noise-based metrics

N = 4  # perturbations per sample (Quantus's default is 200; the definitions do not depend on n)

CASES = [
    # name, robustattr class, Quantus class, Quantus perturbation, extra Quantus kwargs
    ("max_sensitivity", MaxSensitivity, "MaxSensitivity", PF.batch_uniform_noise, {}),
    ("avg_sensitivity", AvgSensitivity, "AvgSensitivity", PF.batch_uniform_noise, {}),
    ("local_lipschitz_estimate", LocalLipschitzEstimate, "LocalLipschitzEstimate", PF.batch_gaussian_noise, PER_SAMPLE_MAX),
    ("relative_input_stability", RelativeInputStability, "RelativeInputStability", PF.batch_uniform_noise, {}),
    ("relative_output_stability", RelativeOutputStability, "RelativeOutputStability", PF.batch_uniform_noise, {}),
]


#: (model, attribution, metric): every metric on SmallCNN × saliency; IG and resnet18 on a subset (CPU time)
RUNS = [("smallcnn", "saliency", c[0]) for c in CASES] + [
    ("smallcnn", "ig", "max_sensitivity"), ("smallcnn", "ig", "local_lipschitz_estimate"),
    ("smallcnn", "ig", "relative_input_stability"), ("resnet18", "saliency", "max_sensitivity"),
    ("resnet18", "saliency", "relative_input_stability"),
]


@pytest.mark.parametrize(("model_name", "att_name", "name"), RUNS)
def test_noise_metrics_match_quantus(model_name: str, att_name: str, name: str) -> None:
    _, cls, qname, perturb, qkw = next(c for c in CASES if c[0] == name)
    model, x, y = MODELS[model_name]()
    att = ATTRIBUTIONS[att_name]()
    if model_name == "resnet18" and name.startswith("relative"):  # the untrained net flips at U(0.02, 0.2)
        qkw = {**qkw, "perturb_func_kwargs": {"lower_bound": 0.0, "upper_bound": 0.01}}
    np.random.seed(0)
    rec = _Recorder(perturb)
    ref = _quantus(getattr(quantus, qname)(nr_samples=N, perturb_func=rec, disable_warnings=True, **qkw), model, x, y, att)
    xp = rec.x_perturbed(x)
    assert xp.shape == (N, *x.shape)
    # Explained in Quantus's batches (B rows per call, one perturbation step each): the relative
    # stabilities divide elementwise by attribution entries, some tiny but non-zero, so float
    # rounding that depends on the convolution's batch size would move them by ~1e-4.
    ours = cls(attribution=att, n_samples=N, internal_batch_size=x.shape[0]).per_sample(model, x, y, x_perturbed=xp)
    _assert_same(ours, ref)
    assert np.isfinite(ref).any()


def test_nan_when_the_prediction_changes() -> None:
    """Large noise flips some predictions of a linear model: NaN at exactly Quantus's places."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()
    _, x, _ = _smallcnn()
    with torch.no_grad():
        y = model(x).argmax(1)
    att = InputXGradient()
    for cls, qname in ((RelativeInputStability, "RelativeInputStability"), (RelativeOutputStability, "RelativeOutputStability")):
        np.random.seed(3)
        rec = _Recorder(PF.batch_uniform_noise)
        q = getattr(quantus, qname)(nr_samples=N, perturb_func=rec, perturb_func_kwargs={"upper_bound": 1.0}, disable_warnings=True)
        ref = _quantus(q, model, x, y, att)
        assert np.isnan(ref).any() and np.isfinite(ref).any()
        ours = cls(att, n_samples=N, internal_batch_size=x.shape[0]).per_sample(model, x, y, x_perturbed=rec.x_perturbed(x))
        _assert_same(ours, ref)
    # Max-Sensitivity with the flag: NaN as in Quantus (np.max instead of nanmax)
    np.random.seed(3)
    rec = _Recorder(PF.batch_uniform_noise)
    q = quantus.MaxSensitivity(nr_samples=N, perturb_func=rec, lower_bound=1.0, return_nan_when_prediction_changes=True, disable_warnings=True)
    ref = _quantus(q, model, x, y, att)
    ours = MaxSensitivity(att, n_samples=N, nan_on_prediction_change=True).per_sample(model, x, y, x_perturbed=rec.x_perturbed(x))
    assert np.isnan(ref).any() and np.isfinite(ref).any()
    _assert_same(ours, ref)


def test_local_lipschitz_quantus_default_normalisation_is_per_batch() -> None:
    """Quantus's default divides by the batch maximum: equal to robustattr with one-sample batches only."""
    model, x, y = _smallcnn()
    x, y = x[:3], y[:3]
    np.random.seed(1)
    rec = _Recorder(PF.batch_gaussian_noise)
    ref = _quantus(quantus.LocalLipschitzEstimate(nr_samples=N, perturb_func=rec, disable_warnings=True), model, x, y, Saliency(), batch_size=1)
    # Quantus drew sample by sample: [B·n] batches of one row → [n, B, ...]
    xp = torch.as_tensor(np.stack(rec.batches)).view(x.shape[0], N, *x.shape[1:]).transpose(0, 1)
    lle = LocalLipschitzEstimate(n_samples=N, internal_batch_size=1)
    ours = torch.cat([lle.per_sample(model, x[b : b + 1], y[b : b + 1], x_perturbed=xp[:, b : b + 1]) for b in range(3)])
    _assert_same(ours, ref)
    np.random.seed(1)
    rec = _Recorder(PF.batch_gaussian_noise)
    batch_wide = _quantus(quantus.LocalLipschitzEstimate(nr_samples=N, perturb_func=rec, disable_warnings=True), model, x, y, Saliency())
    ours = LocalLipschitzEstimate(n_samples=N, internal_batch_size=3).per_sample(model, x, y, x_perturbed=rec.x_perturbed(x))
    assert not np.allclose(ours.numpy(), batch_wide, rtol=1e-3)  # the batch-wide maximum changes the values


@pytest.mark.parametrize("model_name", list(MODELS))
def test_relative_representation_stability_matches_quantus(model_name: str) -> None:
    model, x, y = MODELS[model_name]()
    # SmallCNN: Quantus's default layers. resnet18: block outputs only — Quantus keeps NumPy views
    # of CPU activations, so outputs later modified in place (BatchNorm → ReLU(inplace)) differ.
    layers = None if model_name == "smallcnn" else ["1.net.layer1", "1.net.layer3", "1.net.fc"]
    np.random.seed(2)
    rec = _Recorder(PF.batch_uniform_noise)
    q = quantus.RelativeRepresentationStability(nr_samples=N, perturb_func=rec, layer_names=layers, disable_warnings=True)
    ref = _quantus(q, model, x, y, Saliency())
    rrs = RelativeRepresentationStability(n_samples=N, layers=layers, internal_batch_size=x.shape[0])
    ours = rrs.per_sample(model, x, y, x_perturbed=rec.x_perturbed(x))
    _assert_same(ours, ref)
    if layers is None:
        assert "1.features.0" in default_representation_layers(model) and "1.features" not in default_representation_layers(model)


# --------------------------------------------------------------------------- continuity, consistency


@pytest.mark.parametrize(("model_name", "att_name"), [("smallcnn", "saliency"), ("smallcnn", "ig"), ("resnet18", "saliency")])
def test_continuity_matches_quantus(model_name: str, att_name: str) -> None:
    model, x, y = MODELS[model_name]()
    att = ATTRIBUTIONS[att_name]()
    steps = 5 if model_name == "smallcnn" else 4  # resnet18 at 8×8: shifts −4, 0, 4, 8 (includes the identity)
    # (Quantus 0.6 cannot run return_nan_when_prediction_changes=True with NumPy 2: it uses np.NaN.)
    q = quantus.Continuity(nr_steps=steps, disable_warnings=True, **PER_SAMPLE_MAX)
    ref = _quantus(q, model, x, y, att)
    ours = Continuity(att, nr_steps=steps, internal_batch_size=x.shape[0]).per_sample(model, x, y)
    _assert_same(ours, ref)


def test_continuity_nan_when_a_translation_changes_the_class() -> None:
    """Against an explicit loop: NaN iff some translation's predicted class differs from y."""
    model, x, y = _smallcnn()
    y = y.clone()
    with torch.no_grad():
        y[:3] = model(x[:3]).argmax(1)  # the first three explained with their predicted class
    steps = 5
    ours = Continuity(nr_steps=steps, nan_on_prediction_change=True).per_sample(model, x, y)
    plain = Continuity(nr_steps=steps).per_sample(model, x, y)
    from robustattr.metrics.robustness import translation_shifts

    with torch.no_grad():
        changed = torch.stack([model(translate_x(x, t)).argmax(1) != y for t in translation_shifts(28, steps)]).any(0)
    assert changed.any()
    assert torch.equal(torch.isnan(ours), changed)
    torch.testing.assert_close(ours[~changed], plain[~changed])


def test_translation_matches_quantus() -> None:
    x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    for shift in (-6, -2, 0, 3, 6):  # Quantus fails for |shift| > W (robustattr gives the constant image)
        ref = PF.batched_translation(x.numpy(), "black", shift, direction="x")
        torch.testing.assert_close(translate_x(x, shift), torch.as_tensor(ref), rtol=0, atol=0)


@pytest.mark.parametrize(("method", "qfunc", "take_abs"), [("top_n_sign", "top_n_sign", True), ("sign", "sign", False), ("floating_points", "floating_points", False)])
def test_consistency_matches_quantus(method: str, qfunc: str, take_abs: bool) -> None:
    torch.manual_seed(0)
    model = build_model(SmallCNN(width=8, hidden=32), (0.3,), (0.3,)).eval()
    x, _ = load_digits_tensors(28)
    x = x[:12].clone()
    # 2 decimals of a normalised map: identical labels for pairs of samples (duplicates and zero maps)
    x[6:9] = x[0:3]
    with torch.no_grad():
        y = model(x).argmax(1)
    discretise = getattr(quantus.functions.discretise_func, qfunc)
    n = 5 if method == "top_n_sign" else 2
    q = quantus.Consistency(discretise_func=lambda a: discretise(a, n=n), abs=take_abs, disable_warnings=True, **PER_SAMPLE_MAX)
    ref = _quantus(q, model, x, y, InputXGradient())
    ours = Consistency(InputXGradient(), discretise_method=method, n=n, take_abs=take_abs).per_sample(model, x, y)
    _assert_same(ours, ref)
    assert (ref > 0).any()


# --------------------------------------------------------------------------- API: states, seeding, registry


def test_torchmetrics_accumulation_seeding_and_functional_api() -> None:
    model, x, y = _smallcnn()
    idx = torch.arange(10, 16)
    m = MaxSensitivity(n_samples=3, seed=7)
    full = m.per_sample(model, x, y, index=idx)
    part = m.per_sample(model, x[2:5], y[2:5], index=idx[2:5])  # the same samples in another batch
    torch.testing.assert_close(part, full[2:5], rtol=1e-5, atol=0)
    m.update(model, x[:3], y[:3], index=idx[:3])
    m.update(model, x[3:], y[3:], index=idx[3:])
    torch.testing.assert_close(m.compute(), full.mean(), rtol=1e-6, atol=0)
    assert int(m.count) == 6 and int(m.nan_count) == 0
    assert all(m._reductions[k].__name__ in ("dim_zero_sum", "sum") for k in ("total", "count", "nan_count"))
    fn = functional.max_sensitivity(model, x, y, Saliency(), index=idx, n_samples=3, seed=7)
    torch.testing.assert_close(fn, full, rtol=0, atol=0)
    # the injected draw is what the seeded draw is
    xp = MaxSensitivity(n_samples=3, seed=7).perturb(x, idx)
    torch.testing.assert_close(MaxSensitivity(n_samples=3).per_sample(model, x, y, x_perturbed=xp), full, rtol=0, atol=0)
    # NaN samples are counted apart
    r = RelativeInputStability(n_samples=2, perturbation=UniformNoise(0.5, 3.0))
    r.update(model, x, y, index=idx)
    assert int(r.count) + int(r.nan_count) == 6


def test_perturbation_laws_and_linear_closed_forms() -> None:
    x = torch.rand(500, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = UniformNoise(0.02, 0.2)(x, 2, torch.Generator().manual_seed(1)) - x
    assert float(d.min()) >= 0.02 and float(d.max()) <= 0.2
    g = GaussianNoise(0.1)(x, 2, torch.Generator().manual_seed(1)) - x
    assert abs(float(g.std()) - 0.1) < 0.005
    # a linear model: saliency is constant → Max-Sensitivity and LLE are 0; IxG's sensitivity is ‖η⊙w‖/‖x⊙w‖
    torch.manual_seed(0)
    lin = nn.Linear(16, 3).double()
    model = nn.Sequential(nn.Flatten(), lin)
    xs, ys = x[:4], torch.tensor([0, 1, 2, 0])
    assert float(MaxSensitivity(n_samples=3).per_sample(model, xs, ys).abs().max()) == 0
    assert float(LocalLipschitzEstimate(n_samples=3).per_sample(model, xs, ys).abs().max()) == 0
    xp = UniformNoise()(xs, 3, torch.Generator().manual_seed(2))
    w = lin.weight.detach()[ys].view(4, 1, 4, 4)
    ratio = ((xp - xs) * w).flatten(2).norm(dim=2) / (xs * w).flatten(1).norm(dim=1)
    torch.testing.assert_close(MaxSensitivity(InputXGradient()).per_sample(model, xs, ys, x_perturbed=xp), ratio.amax(0))
    torch.testing.assert_close(AvgSensitivity(InputXGradient()).per_sample(model, xs, ys, x_perturbed=xp), ratio.mean(0))


def test_registry_and_contract() -> None:
    names = {
        "max_sensitivity": MaxSensitivity, "avg_sensitivity": AvgSensitivity,
        "local_lipschitz_estimate": LocalLipschitzEstimate, "continuity": Continuity, "consistency": Consistency,
        "relative_input_stability": RelativeInputStability, "relative_output_stability": RelativeOutputStability,
        "relative_representation_stability": RelativeRepresentationStability,
    }
    model, x, y = _smallcnn()
    model.train()
    for name, cls in names.items():
        assert registry.get("metric", name) is cls
        m = registry.build("metric", name, n_samples=2) if name not in ("continuity", "consistency") else registry.build("metric", name)
        assert isinstance(m, RobustnessMetric) and not isinstance(m, AttributionMetric)
        v = m.per_sample(model, x[:3], y[:3], index=torch.arange(3))
        assert v.shape == (3,) and v.dtype == torch.float64
        assert all(mod.training for mod in model.modules())  # modes restored
    with pytest.raises(ValueError, match="n_samples"):
        MaxSensitivity(n_samples=0)
    with pytest.raises(ValueError, match="x_perturbed"):
        MaxSensitivity(n_samples=2).per_sample(model, x, y, x_perturbed=torch.zeros(2, 1, 1, 28, 28))
    with pytest.raises(ValueError, match="layers"):
        RelativeRepresentationStability(n_samples=1, layers=["nope"]).per_sample(model, x[:2], y[:2])
