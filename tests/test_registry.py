"""Contract tests parametrised over the registries: a unit is tested the moment it is registered."""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustattr import registry
from robustattr.attacks.core import AttackResult
from robustattr.attributions import Saliency
from robustattr.attributions.base import Attribution
from robustattr.evaluation import Evaluator
from robustattr.losses.base import LossOutput
from robustattr.models import SmallCNN, build_model

#: Cheap settings applied to every constructor that accepts them (the contract is about
#: behaviour, not about the papers' budgets).
SMALL: dict[str, Any] = {
    "steps": 2, "n_samples": 3, "ig_steps": 4, "approx": 2, "inner_ig_steps": 2, "top_k": 20, "k": 20, "iters": 3,
}


def construct(cls: Any) -> Any:
    """Instantiate ``cls`` with :data:`SMALL` where accepted and Saliency() for required attributions."""
    kwargs: dict[str, Any] = {}
    for name, p in inspect.signature(cls).parameters.items():
        if name in SMALL:
            kwargs[name] = SMALL[name]
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            if name == "attribution":
                kwargs[name] = Saliency()
            elif name == "eps":
                kwargs[name] = 0.1
            else:
                raise AssertionError(f"{cls.__name__} needs a value for {name!r} in the contract test")
    return cls(**kwargs)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,))


def _batch() -> tuple[Tensor, Tensor]:
    from robustattr.data import load_digits_tensors

    x, y = load_digits_tensors(28)
    return x[:3].clone(), y[:3].clone()


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _mixed_modes(model: nn.Module) -> nn.Module:
    model.train()
    model[1].features.eval()  # a mixed tree: every submodule's mode must come back as it was
    return model


@pytest.mark.parametrize("kind", sorted(registry.KINDS))
def test_every_kind_is_populated_and_names_are_unique(kind: str) -> None:
    names = registry.available(kind)
    assert names, f"no {kind} registered"
    classes = [registry.get(kind, n) for n in names]
    assert len(set(classes)) == len(classes)
    for n, c in zip(names, classes, strict=True):
        assert registry.name_of(c) == n


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="available: .*saliency"):
        registry.build("attribution", "salency")
    with pytest.raises(ValueError, match="unknown registry kind"):
        registry.available("optimizer")


@pytest.mark.parametrize("name", registry.available("attribution"))
def test_attribution_contract(name: str) -> None:
    attr = construct(registry.get("attribution", name))
    assert isinstance(attr, Attribution)
    model = _mixed_modes(_model())
    modes = _modes(model)
    x, y = _batch()
    x0 = x.clone()
    g = attr(model, x, y)
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert torch.equal(x, x0) and x.grad is None and not x.requires_grad
    assert _modes(model) == modes
    if getattr(attr, "differentiable", True):
        model.zero_grad()
        attr(model, x, y, create_graph=True).pow(2).sum().backward()
        grads = [p.grad for p in model.parameters()]
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)
        assert all(gr is None or torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize("name", registry.available("attack"))
def test_attack_contract(name: str) -> None:
    attack = construct(registry.get("attack", name))
    model = _mixed_modes(_model())
    modes = _modes(model)
    x, y = _batch()
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # attribution attacks skip misclassified samples
    _mixed_modes(model)
    x0 = x.clone()
    out = attack(model, x, y)
    x_adv = out.x_adv if isinstance(out, AttackResult) else out
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert torch.equal(x, x0) and x.grad is None
    assert _modes(model) == modes
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    eps = getattr(attack, "eps", None)
    if eps is not None:
        norm = getattr(attack, "norm", "linf")
        d = (x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= eps * (1 + 1e-5) + 1e-7).all()


@pytest.mark.parametrize("name", registry.available("loss"))
def test_loss_contract(name: str) -> None:
    loss = construct(registry.get("loss", name))
    model = _mixed_modes(_model())
    modes = _modes(model)
    x, y = _batch()
    out = loss(model, x, y)
    assert isinstance(out, LossOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.terms.values())
    assert _modes(model) == modes
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _is_robustness_metric(name: str) -> bool:
    from robustattr.metrics import RobustnessMetric

    return issubclass(registry.get("metric", name), RobustnessMetric)


@pytest.mark.parametrize("name", [n for n in registry.available("metric") if not _is_robustness_metric(n)])
def test_metric_contract(name: str) -> None:
    cls = registry.get("metric", name)
    if not hasattr(cls, "per_sample") or "b" not in inspect.signature(cls.per_sample).parameters:
        pytest.fail(f"metric {name} does not follow the pairwise-map contract; extend this test for its kind")
    metric = construct(cls)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 28, 28, generator=g)
    b = a + 0.3 * torch.rand(4, 1, 28, 28, generator=g)
    vals = metric.per_sample(a, b)
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in vals.values())
    same = metric.per_sample(a, a.clone())
    best = 1.0 if metric.higher_is_better else 0.0
    for v in same.values():
        torch.testing.assert_close(v.double(), torch.full((4,), best, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", [n for n in registry.available("metric") if _is_robustness_metric(n)])
def test_robustness_metric_contract(name: str) -> None:
    """Metrics updated with (model, x, y, index): [B] float64 values, no side effects, sum states,
    per-sample streams (a sample's value does not depend on its batch, except Consistency,
    which is a within-batch statistic by definition)."""
    metric = construct(registry.get("metric", name))
    model = _mixed_modes(_model())
    modes = _modes(model)
    x, y = _batch()
    x0 = x.clone()
    idx = torch.tensor([5, 6, 7])
    v = metric.per_sample(model, x, y, index=idx)
    assert v.shape == (3,) and v.dtype == torch.float64 and not torch.isinf(v).any()
    assert torch.equal(x, x0) and x.grad is None and not x.requires_grad
    assert _modes(model) == modes
    assert all(p.grad is None for p in model.parameters())
    if name != "consistency":
        torch.testing.assert_close(metric.per_sample(model, x[1:], y[1:], index=idx[1:]), v[1:], rtol=1e-5, atol=1e-12, equal_nan=True)
    metric.update(model, x, y, index=idx)
    assert int(metric.count) + int(metric.nan_count) == 3
    assert metric.compute().dim() == 0


# ---- the input contract, for every registered unit -------------------------------------------
def _vector_output(model: nn.Module) -> nn.Module:
    class FirstLogit(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return model(x)[:, 0]

    return FirstLogit()


def _bad_case(case: str, x: Tensor, y: Tensor, model: nn.Module) -> tuple[Tensor, Tensor, nn.Module, str]:
    """Corrupt a batch; returns ``(x, y, model, regex of the expected message)``."""
    x, y = x.clone(), y.clone()
    if case == "all_nan_image":
        x[1] = float("nan")
        return x, y, model, r"^x: samples \[1\] contain NaN/inf$"
    if case == "nan_pixel":
        x[2, 0, 14, 14] = float("nan")
        return x, y, model, r"^x: samples \[2\] contain NaN/inf$"
    if case == "inf_pixel":
        x[0, 0, 3, 5] = float("inf")
        return x, y, model, r"^x: samples \[0\] contain NaN/inf$"
    if case == "x255":
        return 255 * x, y, model, r"^x: samples \[[0-9, ]+\] lie outside \[0, 1\] \(min .*, max .*\); .*range_check\(False\)"
    if case == "label_out_of_range":
        y[1] = 10
        return x, y, model, r"^y: samples \[1\] have class 10 outside \[0, 10\)$"
    if case == "vector_output":
        # folded attributions (IG path points, noise copies) name their rows: "[9] ... (the 3 samples folded into 9 rows)"
        return x, y, _vector_output(model), (
            r"^model output has shape (\[3\], expected \[B, K\] = \[3, K\]"
            r"|\[(\d+)\], expected \[B, K\] = \[\2, K\] \(the 3 samples folded into \2 rows\))$"
        )
    raise AssertionError(case)


CASES = ["all_nan_image", "nan_pixel", "inf_pixel", "x255", "label_out_of_range", "vector_output"]


def _call(kind: str, unit: Any, model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> Any:
    if kind == "evaluator":
        return unit.evaluate(model, x, y, torch.arange(x.shape[0]), **kwargs)
    return unit(model, x, y, **kwargs)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in ("attribution", "attack", "loss") for n in registry.available(k)])
def test_input_contract_refuses_bad_input(kind: str, name: str, case: str) -> None:
    unit = construct(registry.get(kind, name))
    model = _model()
    x, y = _batch()
    x, y, model, message = _bad_case(case, x, y, model)
    with pytest.raises(ValueError, match=message):
        _call(kind, unit, model, x, y)


@pytest.mark.parametrize("how", ["context", "keyword"])
@pytest.mark.parametrize(
    ("kind", "name"), [(k, n) for k in ("attribution", "attack", "loss", "evaluator") for n in registry.available(k)]
)
def test_range_check_off_lets_other_pixel_conventions_through(kind: str, name: str, how: str) -> None:
    """``with range_check(False):`` and the entry's ``check_range=False`` are the same switch (the
    "context" case calls with the default ``check_range=True``, which keeps the enclosing setting)."""
    from robustattr.utils import range_check
    from robustattr.utils.contract import range_check_enabled

    unit = construct(registry.get(kind, name))
    model = _model()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"lie outside \[0, 1\].*check_range=False"):
        _call(kind, unit, model, 255 * x, y)
    if how == "context":
        with range_check(False):
            out = _call(kind, unit, model, 255 * x, y)
    else:
        out = _call(kind, unit, model, 255 * x, y, check_range=False)
    assert out is not None
    assert range_check_enabled()  # restored after the call
    if how == "keyword":  # NaN is still refused with the range check off
        x_nan = 255 * x
        x_nan[1, 0, 3, 3] = float("nan")
        with pytest.raises(ValueError, match=r"^x: samples \[1\] contain NaN/inf$"):
            _call(kind, unit, model, x_nan, y, check_range=False)


def _other_entries() -> dict[str, Any]:
    """The public entries that are not registered units: ``name -> f(model, x, y, **kw)``."""
    from robustattr.attributions import GradientSHAP, SmoothGrad
    from robustattr.bounds import full_jacobian, top_singular, worst_case_bounds
    from robustattr.certify import UniformSmoothingCertifier
    from robustattr.evaluation import evaluate_bounds

    sal = Saliency()
    cert = UniformSmoothingCertifier(Saliency(), radius=0.3, n_samples=4, eps_grid=(1e-3,), taus=(0.5,))
    sg, gs = SmoothGrad(sigma=0.1, n_samples=2), GradientSHAP(n_samples=2)

    def metric_update(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> Any:
        m = registry.build("metric", "max_sensitivity", n_samples=2)
        m.update(model, x, y, index=torch.arange(3), **kw)
        return m.compute()

    return {
        "smoothgrad.attribute_with_noise": lambda m, x, y, **kw: sg.attribute_with_noise(m, x, y, sg.sample_noise(x), **kw),
        "gradient_shap.attribute_with_noise": lambda m, x, y, **kw: gs.attribute_with_noise(m, x, y, gs.sample_noise(x), **kw),
        "certify": lambda m, x, y, **kw: cert.certify(m, x, **kw),
        "min_radius": lambda m, x, y, **kw: cert.min_radius(m, x, 1e-3, 0.5, [0.3], **kw),
        "top_singular": lambda m, x, y, **kw: top_singular(sal, m, x, y, iters=2, **kw),
        "full_jacobian": lambda m, x, y, **kw: full_jacobian(sal, m, x[:1], y[:1], chunk_size=392, **kw),
        "worst_case_bounds": lambda m, x, y, **kw: worst_case_bounds(sal, m, x, y, eps=0.1, iters=2, **kw),
        "evaluate_bounds": lambda m, x, y, **kw: evaluate_bounds(m, sal, x, y, eps=0.1, attack_repeats=1, attack_steps=1, iters=2, **kw),
        "robustness_metric.per_sample": lambda m, x, y, **kw: registry.build("metric", "relative_input_stability", n_samples=2).per_sample(m, x, y, index=torch.arange(3), **kw),
        "consistency.per_sample": lambda m, x, y, **kw: registry.build("metric", "consistency").per_sample(m, x, y, **kw),
        "robustness_metric.update": metric_update,
    }


@pytest.mark.filterwarnings("ignore:.*(ReLU activations|max pooling).*:UserWarning")
@pytest.mark.parametrize("entry", list(_other_entries()))
def test_check_range_keyword_of_the_other_public_entries(entry: str) -> None:
    fn = _other_entries()[entry]
    model = _model()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"lie outside \[0, 1\]"):
        fn(model, 255 * x, y)
    assert fn(model, 255 * x, y, check_range=False) is not None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", [n for n in registry.available("metric") if not _is_robustness_metric(n)])
def test_metric_refuses_non_finite_maps(name: str, value: float) -> None:
    metric = construct(registry.get("metric", name))
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 28, 28, generator=g)
    b = a.clone()
    b[2, 0, 5, 5] = value
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        metric.per_sample(a, b)
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        metric.per_sample(b, a)


@pytest.mark.parametrize("name", registry.available("evaluator"))
def test_evaluator_contract(name: str) -> None:
    ev = construct(registry.get("evaluator", name))
    assert isinstance(ev, Evaluator)
    model = _mixed_modes(_model())
    modes = _modes(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch()
    index = torch.tensor([5, 0, 7])
    x0 = x.clone()
    out = ev.evaluate(model, x, y, index)
    assert list(out) == ev.columns(10)
    for col, v in out.items():
        assert v.shape == (3,), col  # flat per-sample columns
        assert v.dtype in (torch.bool, torch.int64, torch.float32, torch.float64), (col, v.dtype)
        assert not v.requires_grad, col
    # no side effects on the input, the model's modes, parameters, gradients or buffers
    assert torch.equal(x, x0) and x.grad is None and not x.requires_grad
    assert _modes(model) == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    summary = ev.summarize(out)
    assert summary and all(isinstance(k, str) and isinstance(v, float) for k, v in summary.items())
    assert all(math.isfinite(v) or math.isnan(v) for v in summary.values()), summary
    json.dumps(ev.params())
    assert all(isinstance(w, str) for w in ev.warnings((1, 28, 28)))
    assert ev.cost() > 0
