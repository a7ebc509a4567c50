"""RobustnessEvaluator: the Quantus-definition robustness metrics as an evaluator, callback keys, certify.py.

The evaluator equals the metrics called directly (and, for Max-Sensitivity, an independent loop
with the documented per-sample seeds); per-sample values do not depend on the batching (except
Consistency, a within-batch statistic, which is warned about); the summary ignores NaN and
reports the NaN fraction; AttributionRobustnessCallback logs ``val_attr/robustness/<metric>``;
``certify.py robustness`` writes the evaluator's values to its run store.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import Tensor, nn

from robustattr.attacks import TopKAttack
from robustattr.attributions import IntegratedGradients, Saliency
from robustattr.evaluation import AttributionAttackEvaluator, RobustnessEvaluator
from robustattr.metrics import (
    Consistency,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
    RelativeRepresentationStability,
)
from robustattr.models import SmallCNN, build_model
from tests.apps.conftest import digits_checkpoint  # noqa: F401  (the session fixture of the app tests)

INDEX = torch.tensor([3, 10, 11, 25, 40, 41])


@pytest.fixture(scope="module")
def data() -> tuple[nn.Module, Tensor, Tensor]:
    """A tiny untrained max-pool ReLU SmallCNN and 6 digits."""
    from robustattr.data import load_digits_tensors

    torch.manual_seed(0)
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).eval()
    x, y = load_digits_tensors(28)
    return model, x[:6].clone(), y[:6].clone()


def _metrics() -> list[MaxSensitivity | LocalLipschitzEstimate | RelativeInputStability]:
    return [MaxSensitivity(n_samples=6), LocalLipschitzEstimate(n_samples=6), RelativeInputStability(n_samples=6)]


def _run(ev: RobustnessEvaluator, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, batches: list[list[int]]) -> dict[str, Tensor]:
    """Evaluate the given row groups separately and put the rows back in order."""
    out = {c: torch.full((x.shape[0],), math.nan, dtype=torch.float64) for c in ev.columns()}
    for rows in batches:
        r = torch.tensor(rows)
        res = ev.evaluate(model, x[r], y[r], index[r])
        for c in out:
            out[c][r] = res[c]
    return out


def test_equals_direct_metric_calls_with_the_documented_seeds(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ev = RobustnessEvaluator(metrics=_metrics(), seed=4)
    out = ev.evaluate(model, x, y, INDEX)
    assert list(out) == ev.columns() == ["max_sensitivity", "local_lipschitz_estimate", "relative_input_stability"]
    with torch.no_grad():
        pred = model(x).argmax(1)
    for m in _metrics():
        ref = m.per_sample(model, x, pred, index=INDEX + 4)
        assert out[m.name].dtype == torch.float64 and out[m.name].shape == (6,)
        torch.testing.assert_close(out[m.name], ref, rtol=0, atol=0, equal_nan=True)
    # independent loop: Max-Sensitivity of sample 2 with x̃_j = x + U(-0.2, 0.2) from Generator(4 + index)
    g = torch.Generator().manual_seed(4 + int(INDEX[2]))
    xp = x[2:3] + (torch.rand((6, *x.shape[1:]), generator=g) * 0.4 - 0.2)
    yy = pred[2:3].repeat(6)
    z = xp.clone().requires_grad_(True)
    (gp,) = torch.autograd.grad(model(z).gather(1, yy[:, None]).sum(), z)
    x0 = x[2:3].clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(model(x0)[0, pred[2]], x0)
    ratio = (g0 - gp).flatten(1).double().norm(dim=1) / g0.double().norm()
    assert float(out["max_sensitivity"][2]) == pytest.approx(float(ratio.max()), rel=1e-5)
    # explain="label": the dataset label is explained
    lab = RobustnessEvaluator(metrics=[MaxSensitivity(n_samples=6)], explain="label", seed=4).evaluate(model, x, y, INDEX)
    torch.testing.assert_close(lab["max_sensitivity"], MaxSensitivity(n_samples=6).per_sample(model, x, y, index=INDEX + 4))
    assert not torch.equal(pred, y)  # the two modes explain different classes here


def test_names_take_the_given_attribution_and_instances_keep_theirs(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ig = IntegratedGradients(steps=4)
    ev = RobustnessEvaluator(metrics=["max_sensitivity", Consistency()], attribution=ig)
    assert ev.metrics["max_sensitivity"].attribution is ig
    assert isinstance(ev.metrics["consistency"].attribution, Saliency)
    assert isinstance(RobustnessEvaluator(metrics=["max_sensitivity"]).metrics["max_sensitivity"].attribution, Saliency)
    assert ev.metrics["max_sensitivity"].n_samples == 200  # Quantus's default
    out = RobustnessEvaluator(metrics=[MaxSensitivity(attribution=ig, n_samples=4)], seed=1).evaluate(model, x, y, INDEX)
    with torch.no_grad():
        pred = model(x).argmax(1)
    ref = MaxSensitivity(attribution=IntegratedGradients(steps=4), n_samples=4).per_sample(model, x, pred, index=INDEX + 1)
    torch.testing.assert_close(out["max_sensitivity"], ref)


def test_batch_size_independent_except_consistency(data) -> None:  # type: ignore[no-untyped-def]
    # in float64: float32 kernels round differently for different batch sizes, and that rounding is
    # amplified at ReLU/max-pool kinks and by Relative Input Stability's elementwise division by g(x)
    # (measured in float32 on this model: 1.7e-3 and 4e-3 relative); in float64 they agree to 1e-12
    model32, x32, y = data
    model, x = copy.deepcopy(model32).double(), x32.double()
    ev = RobustnessEvaluator(metrics=[*_metrics(), Consistency(discretise_method="sign")], seed=2)
    whole = _run(ev, model, x, y, INDEX, [[0, 1, 2, 3, 4, 5]])
    for batches in ([[0], [1], [2], [3], [4], [5]], [[5, 1], [0, 4, 2], [3]]):
        part = _run(ev, model, x, y, INDEX, batches)
        for c in ("max_sensitivity", "local_lipschitz_estimate", "relative_input_stability"):
            torch.testing.assert_close(part[c], whole[c], rtol=1e-10, atol=0, equal_nan=True, msg=c)
    # Consistency compares a sample with the others of its batch: alone, no other sample shares its label
    alone = _run(ev, model, x, y, INDEX, [[i] for i in range(6)])["consistency"]
    assert torch.equal(alone, torch.zeros(6, dtype=torch.float64))
    warned = ev.warnings((1, 28, 28))
    assert len(warned) == 1 and warned[0].startswith("consistency compares each sample with the other samples of its batch")
    assert ev.batch_dependent == ["consistency"]
    assert RobustnessEvaluator(metrics=_metrics()).warnings((1, 28, 28)) == []


def test_summary_ignores_nan_and_reports_the_nan_fraction() -> None:
    ev = RobustnessEvaluator(metrics=["max_sensitivity", "relative_input_stability"])
    nan = math.nan
    res = {
        "max_sensitivity": torch.tensor([1.0, 2.0, 4.0, 5.0], dtype=torch.float64),
        "relative_input_stability": torch.tensor([nan, 3.0, nan, 6.0], dtype=torch.float64),
    }
    s = ev.summarize(res)
    assert s == {
        "max_sensitivity": 3.0, "max_sensitivity/nan_frac": 0.0,
        "relative_input_stability": 4.5, "relative_input_stability/nan_frac": 0.5,
    }
    all_nan = ev.summarize({k: torch.full((3,), nan, dtype=torch.float64) for k in res})
    assert math.isnan(all_nan["max_sensitivity"]) and all_nan["max_sensitivity/nan_frac"] == 1.0


def test_params_track_every_result_changing_parameter() -> None:
    base = RobustnessEvaluator(metrics=_metrics())
    p = base.params()
    json.dumps(p)
    assert [m["name"] for m in p["metrics"]] == ["max_sensitivity", "local_lipschitz_estimate", "relative_input_stability"]
    assert p["metrics"][0]["n_samples"] == 6 and p["metrics"][0]["attribution"]["class"].endswith("Saliency")
    assert p["metrics"][2]["eps_min"] == 1e-6 and p["metrics"][2]["nan_on_prediction_change"] is True
    changed = [
        RobustnessEvaluator(metrics=_metrics(), seed=1),
        RobustnessEvaluator(metrics=_metrics(), explain="label"),
        RobustnessEvaluator(metrics=[MaxSensitivity(n_samples=7), *_metrics()[1:]]),
        RobustnessEvaluator(metrics=["max_sensitivity"], attribution=IntegratedGradients(steps=4)),
        RobustnessEvaluator(metrics=["max_sensitivity"], attribution=IntegratedGradients(steps=8)),
    ]
    ids = [json.dumps(e.params(), sort_keys=True) for e in [base, *changed]]
    assert len(set(ids)) == len(ids)
    # parameters passed on through **kwargs (the relative stabilities) are part of the identity too
    rrs = [RobustnessEvaluator(metrics=[RelativeRepresentationStability(n_samples=n)]).params() for n in (3, 4)]
    assert rrs[0] != rrs[1] and rrs[0]["metrics"][0]["n_samples"] == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"metrics: 'topk' is not a robustness metric; available: .*max_sensitivity"):
        RobustnessEvaluator(metrics=["topk"])
    with pytest.raises(ValueError, match="lists 'max_sensitivity' twice"):
        RobustnessEvaluator(metrics=["max_sensitivity", MaxSensitivity(n_samples=3)])
    with pytest.raises(ValueError, match="explain must be"):
        RobustnessEvaluator(explain="target")
    with pytest.raises(ValueError, match="at least one"):
        RobustnessEvaluator(metrics=[])
    with pytest.raises(ValueError, match="attribution must be an Attribution"):
        RobustnessEvaluator(attribution="saliency")  # type: ignore[arg-type]


def test_input_contract_and_check_range(data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = data
    ev = RobustnessEvaluator(metrics=[MaxSensitivity(n_samples=3)])
    with pytest.raises(ValueError, match=r"^x: samples \[3, 10, 11, 25, 40, 41\] lie outside \[0, 1\]"):
        ev.evaluate(model, 255 * x, y, INDEX)
    bad = x.clone()
    bad[1, 0, 2, 2] = math.nan
    with pytest.raises(ValueError, match=r"^x: samples \[10\] contain NaN/inf$"):
        ev.evaluate(model, bad, y, INDEX, check_range=False)
    out = ev.evaluate(model, 255 * x, y, INDEX, check_range=False)
    with torch.no_grad():
        pred = model(255 * x).argmax(1)
    torch.testing.assert_close(out["max_sensitivity"], MaxSensitivity(n_samples=3).per_sample(model, 255 * x, pred, index=INDEX, check_range=False))


# ---- the validation callback ------------------------------------------------------------------
def test_callback_logs_robustness_keys_equal_to_direct_values(tmp_path: Path) -> None:
    from robustattr.data import DigitsDataModule
    from robustattr.lightning import AttributionRobustnessCallback, RobustClassifier

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(width=4, hidden=16), mean=dm.mean, std=dm.std)
    attack_ev = AttributionAttackEvaluator(attacks={"topk": TopKAttack(Saliency(), eps=0.2, steps=1, step_size=0.1, k=30)}, metrics=["topk"])
    rob = RobustnessEvaluator(metrics=[MaxSensitivity(n_samples=4), RelativeInputStability(n_samples=4)], seed=9)
    cb = AttributionRobustnessCallback(attack_ev, robustness=rob, num_samples=5, batch_size=2, seed=1, progress=False, map_images=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        inference_mode=False, default_root_dir=tmp_path, limit_val_batches=1, callbacks=[cb],
    )
    trainer.validate(model, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_attr/")}
    want = {f"val_attr/robustness/{m}{s}" for m in ("max_sensitivity", "relative_input_stability") for s in ("", "/nan_frac")}
    assert want <= set(logged) and "val_attr/topk/topk" in logged
    # reference: the metrics called directly on the same subset with the documented seeds, in the
    # callback's batches of 2 (float32 kernels round differently for other batch sizes, which Relative
    # Input Stability's elementwise division by g(x) amplifies: 2e-4 relative measured here)
    idx = cb.subset_indices(len(dm.val_set))
    x = torch.stack([dm.val_set[int(i)][0] for i in idx])
    net = model.model.eval()
    with torch.no_grad():
        pred = net(x).argmax(1)

    def direct(metric: MaxSensitivity | RelativeInputStability) -> Tensor:
        return torch.cat([metric.per_sample(net, x[s : s + 2], pred[s : s + 2], index=idx[s : s + 2] + 9) for s in range(0, 5, 2)])

    ms, ris = direct(MaxSensitivity(n_samples=4)), direct(RelativeInputStability(n_samples=4))
    assert logged["val_attr/robustness/max_sensitivity"] == pytest.approx(float(ms.mean()), rel=1e-5)
    ok = ~torch.isnan(ris)
    assert logged["val_attr/robustness/relative_input_stability/nan_frac"] == pytest.approx(float((~ok).double().mean()), abs=1e-7)
    if ok.any():
        assert logged["val_attr/robustness/relative_input_stability"] == pytest.approx(float(ris[ok].mean()), rel=1e-5)
    assert cb.last_results is not None
    torch.testing.assert_close(cb.last_results["robustness/max_sensitivity"], ms, rtol=1e-5, atol=1e-9)


def test_callback_warns_about_consistency_and_refuses_other_evaluators() -> None:
    from robustattr.evaluation import CleanAccuracy
    from robustattr.lightning import AttributionRobustnessCallback

    with pytest.warns(UserWarning, match="'consistency' compares each sample with the others of its batch"):
        AttributionRobustnessCallback(robustness=RobustnessEvaluator(metrics=["consistency"]), progress=False)
    with pytest.raises(ValueError, match="robustness must be a RobustnessEvaluator"):
        AttributionRobustnessCallback(robustness=CleanAccuracy(), progress=False)  # type: ignore[arg-type]


def test_callback_yaml_builds_the_robustness_evaluator() -> None:
    from jsonargparse import ArgumentParser

    from robustattr.lightning import AttributionRobustnessCallback

    parser = ArgumentParser()
    parser.add_argument("--cb", type=AttributionRobustnessCallback)
    text = """
cb:
  class_path: robustattr.lightning.AttributionRobustnessCallback
  init_args:
    progress: false
    robustness:
      metrics:
        - max_sensitivity
        - class_path: robustattr.metrics.LocalLipschitzEstimate
          init_args: {n_samples: 5}
      seed: 3
"""
    cfg = parser.parse_object(yaml.safe_load(text))
    cb = parser.instantiate_classes(cfg).cb
    assert isinstance(cb.robustness, RobustnessEvaluator) and cb.robustness.seed == 3
    assert list(cb.robustness.metrics) == ["max_sensitivity", "local_lipschitz_estimate"]
    assert cb.robustness.metrics["local_lipschitz_estimate"].n_samples == 5


# ---- certify.py robustness ----------------------------------------------------------------------
ROBUSTNESS_YAML = """\
metrics:
  - class_path: robustattr.metrics.MaxSensitivity
    init_args: {n_samples: 4}
  - class_path: robustattr.metrics.RelativeInputStability
    init_args: {n_samples: 4}
seed: 5
"""


def test_certify_robustness_end_to_end(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from robustattr.apps.certify import cli, select_indices
    from robustattr.checkpoint import load_classifier

    (tmp_path / "rob.yaml").write_text(ROBUSTNESS_YAML)
    out = tmp_path / "run"
    args = ["robustness", "--checkpoint", str(digits_checkpoint), "--output", str(out), "--batch_size", "2",
            "--no_progress", "--config", str(tmp_path / "rob.yaml")]
    res = cli([*args, "--num_samples", "3"])
    assert res["counts"] == {"selected": 3, "resumed": 0, "evaluated": 3, "recomputed": 0}
    res = cli([*args, "--num_samples", "5"])  # resumes the 3 samples and adds 2
    # batches of 2 over the whole selection; a batch holding a new sample is evaluated whole
    # (consistency compares a sample with its batch), its finished samples are recomputed, not stored
    counts = res["counts"]
    assert {k: counts[k] for k in ("selected", "resumed", "evaluated")} == {"selected": 5, "resumed": 3, "evaluated": 2}

    first3, sel5 = select_indices(270, 3, None, 0), select_indices(270, 5, None, 0)  # 270 digits in the val split
    redo = [b for b in (sel5[k : k + 2] for k in range(0, 5, 2)) if set(b) - set(first3)]
    assert counts["recomputed"] == sum(len(set(b) & set(first3)) for b in redo)
    printed = capsys.readouterr().out
    assert "robustness: 5 samples" in printed
    lines = [ln.split("\t") for ln in (out / "robustness.tsv").read_text().splitlines()]
    head, rows = lines[0], lines[1:]
    assert head[0] == "index" and {"max_sensitivity", "relative_input_stability"} <= set(head) and len(rows) == 5
    js = json.loads((out / "summary.json").read_text())
    assert set(js["summary"]) == {"max_sensitivity", "max_sensitivity/nan_frac", "relative_input_stability", "relative_input_stability/nan_frac"}
    ident = json.loads((out / "run.json").read_text())
    assert ident["subcommand"] == "robustness" and ident["evaluator"]["seed"] == 5
    assert [m["n_samples"] for m in ident["evaluator"]["metrics"]] == [4, 4]
    # the stored values are the metrics called directly on the loaded network (predicted class, seed 5 + index),
    # in the run's batches: 2 + 1 samples, then the 2 new ones (float32 kernels round differently per batch size)
    module, dm = load_classifier(digits_checkpoint)
    ds = dm.split("val")
    first, sel = select_indices(len(ds), 3, None, 0), select_indices(len(ds), 5, None, 0)
    batches = [first[:2], first[2:], [i for i in sel if i not in first]]
    net = module.model.eval()
    ref: dict[int, float] = {}
    for ids in batches:
        x = torch.stack([ds[i][0] for i in ids])
        with torch.no_grad():
            pred = net(x).argmax(1)
        ref.update(zip(ids, MaxSensitivity(n_samples=4).per_sample(net, x, pred, index=torch.tensor(ids) + 5).tolist(), strict=True))
    col = head.index("max_sensitivity")
    stored = {int(r[0]): float(r[col]) for r in rows}
    assert set(stored) == set(sel)
    for i in sel:
        assert stored[i] == pytest.approx(ref[i], rel=1e-6)
    assert js["summary"]["max_sensitivity"] == pytest.approx(sum(ref.values()) / 5, rel=1e-6)


def test_certify_robustness_prints_the_consistency_warning(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from robustattr.apps.certify import cli

    cli(["robustness", "--checkpoint", str(digits_checkpoint), "--output", str(tmp_path / "c"), "--num_samples", "3",
         "--no_progress", "--metrics", "[consistency]"])
    err = capsys.readouterr().err
    assert "warning: consistency compares each sample with the other samples of its batch" in err
