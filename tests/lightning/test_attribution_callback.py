"""AttributionRobustnessCallback: values vs direct computation, YAML construction, W&B offline run, DDP."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import scipy.stats
import torch
import yaml

from robustattr.attacks import RandomSignAttack, TopKAttack
from robustattr.attributions import Saliency
from robustattr.evaluation import AttributionAttackEvaluator
from robustattr.lightning import (
    AttributionMapLogger,
    AttributionRobustnessCallback,
    RobustClassifier,
)
from robustattr.metrics import KendallTau

REPO = Path(__file__).resolve().parents[2]


def _setup(batch_size: int = 3, num_samples: int = 6):  # type: ignore[no-untyped-def]
    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(width=4, hidden=16), mean=dm.mean, std=dm.std)
    # attacks as instances (YAML builds them through jsonargparse), metrics as names or instances
    attacks = {
        "topk": TopKAttack(Saliency(), eps=0.3, steps=3, step_size=0.1, k=50),
        "rand": RandomSignAttack(Saliency(), eps=0.3, steps=2, k=50),
    }
    ev = AttributionAttackEvaluator(attacks=attacks, metrics=["topk", "lens_topk", "spearman", KendallTau()], seed=3)
    cb = AttributionRobustnessCallback(ev, num_samples=num_samples, batch_size=batch_size, seed=3, progress=False, map_images=2)
    return dm, model, cb


def _validate(tmp_path: Path, devices: int, batch_size: int = 3):  # type: ignore[no-untyped-def]
    dm, model, cb = _setup(batch_size)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, inference_mode=False,
        default_root_dir=tmp_path, limit_val_batches=1, callbacks=[cb],
    )
    trainer.validate(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_attr/")}, cb, model, dm


def test_values_match_direct_computation(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no WandbLogger"):
        metrics, cb, model, dm = _validate(tmp_path, 1)
    for atk in ("topk", "rand"):
        for key in ("topk", "lens_topk", "lens_topk_fwd", "lens_topk_bwd", "spearman", "kendall", "success_rate", "criterion", "attacked_frac"):
            assert f"val_attr/{atk}/{key}" in metrics, (atk, key)
    # reference: same subset, attack called directly with the documented per-sample seeds
    idx = cb.subset_indices(len(dm.val_set))
    x = torch.stack([dm.val_set[int(i)][0] for i in idx])
    y = torch.tensor([int(dm.val_set[int(i)][1]) for i in idx])
    net = model.model.eval()
    with torch.no_grad():
        y = net(x).argmax(1)  # explain="pred" (default): the predicted class is explained and kept
    attack = cb.evaluator.attacks["topk"]
    assert isinstance(attack, TopKAttack) and attack.steps == 3
    r = attack(net, x, y, sample_seeds=(idx + 3) * 1009 + 0)
    keep = ~r.skipped_misclassified
    assert keep.all()
    g0, g1 = Saliency()(net, x, y), Saliency()(net, r.x_adv, y)
    a0, a1 = g0.abs().sum(1), g1.abs().sum(1)
    if keep.any():
        ref_k = np.mean([scipy.stats.kendalltau(a0[i].flatten(), a1[i].flatten()).statistic for i in torch.nonzero(keep).flatten().tolist()])
        ref_s = np.mean([scipy.stats.spearmanr(a0[i].flatten(), a1[i].flatten()).statistic for i in torch.nonzero(keep).flatten().tolist()])
        assert metrics["val_attr/topk/kendall"] == pytest.approx(ref_k, abs=1e-5)
        assert metrics["val_attr/topk/spearman"] == pytest.approx(ref_s, abs=1e-5)
        assert metrics["val_attr/topk/success_rate"] == pytest.approx(float(r.success[keep].float().mean()), abs=1e-6)
        assert metrics["val_attr/topk/criterion"] == pytest.approx(float(r.criterion[keep].mean()), abs=1e-6)
    assert metrics["val_attr/topk/attacked_frac"] == pytest.approx(float(keep.float().mean()))
    assert cb.last_results is not None and cb.last_results["topk/success"].shape == (6,)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        AttributionRobustnessCallback(AttributionAttackEvaluator(metrics=["nope"]))
    with pytest.raises(ValueError, match="attacks"):
        AttributionRobustnessCallback(AttributionAttackEvaluator(attacks={}))
    with pytest.raises(ValueError, match="num_samples"):
        AttributionRobustnessCallback(num_samples=0)
    with pytest.raises(ValueError, match="explain"):
        AttributionRobustnessCallback(AttributionAttackEvaluator(explain="true"))
    with pytest.raises(ValueError, match="num_images"):
        AttributionMapLogger(-1)


def test_inference_mode_fails_loudly(tmp_path: Path) -> None:
    dm, model, cb = _setup()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, inference_mode=True,
                        default_root_dir=tmp_path, limit_val_batches=1, callbacks=[cb])
    with pytest.raises(RuntimeError, match="inference_mode"):
        trainer.validate(model, datamodule=dm)


@pytest.mark.slow
def test_train_py_attr_eval_config_logs_to_offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped YAML (shrunk: 4 samples, 2 steps) through the CLI; keys and images in the offline run."""
    from robustattr.apps.train import build_cli
    from tests.wandb_offline import find_offline_runs, read_offline_run

    experiment = REPO / "configs" / "experiment" / "digits_smallcnn_attr_eval.yaml"
    cfg = yaml.safe_load(experiment.read_text())
    assert cfg["trainer"]["callbacks"] == ["../callbacks/attr_eval.yaml"]
    cb = yaml.safe_load((REPO / "configs" / "callbacks" / "attr_eval.yaml").read_text())
    assert cb["class_path"] == "robustattr.lightning.AttributionRobustnessCallback"
    cb["init_args"]["num_samples"] = 4
    for atk in cb["init_args"]["evaluator"]["attacks"].values():
        atk["init_args"]["steps"] = 2
    cfg["trainer"]["callbacks"] = [cb]
    cfg["model"] = {k: str((experiment.parent / v).resolve()) for k, v in cfg["model"].items()}
    cfg["data"] = str((experiment.parent / cfg["data"]).resolve())
    path = tmp_path / "attr_eval_small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cli = build_cli([
        "fit", "--config", str(path), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])
    logged = set(cli.trainer.logged_metrics)
    expected = {f"val_attr/{a}/{m}" for a in ("topk", "mass_center") for m in ("topk", "lens_topk", "spearman", "kendall", "success_rate")}
    assert expected <= logged, expected - logged
    import wandb

    wandb.finish()
    runs = find_offline_runs(tmp_path)
    assert len(runs) == 1
    deadline = time.monotonic() + 30
    run = read_offline_run(runs[0])
    while not expected <= run.history_keys and time.monotonic() < deadline:
        time.sleep(0.5)
        run = read_offline_run(runs[0])
    assert expected <= run.history_keys, expected - run.history_keys
    assert {"val_attr/topk/maps", "val_attr/mass_center/maps"} <= run.media_keys | run.history_keys


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    # batch_size=1: every sample is computed alone in both runs, so values agree exactly up to
    # the float32 mean reduction; positions are sharded 0,2,4 / 1,3,5 across the two ranks.
    one, cb1, _, _ = _validate(tmp_path / "one", 1, batch_size=1)
    two, _, _, _ = _validate(tmp_path / "two", 2, batch_size=1)
    assert set(one) == set(two) and "val_attr/topk/kendall" in one
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6), k
