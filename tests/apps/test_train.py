"""train.py / LightningCLI, RobustClassifier, checkpoints and the eval-callback base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from robustattr.apps.train import build_cli
from robustattr.checkpoint import CheckpointError, load_classifier
from robustattr.evaluation import Evaluator
from robustattr.lightning import EvalSubsetCallback, RobustClassifier

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "experiment" / "digits_smallcnn.yaml"


def _csv(tmp_path: Path) -> list[str]:
    return [
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path),
    ]


def test_fast_dev_run(tmp_path: Path) -> None:
    cli = build_cli(["fit", "--config", str(CONFIG), "--trainer.fast_dev_run", "true", *_csv(tmp_path)])
    assert cli.trainer.state.finished
    assert cli.trainer._evaluation_loop.inference_mode is False  # callbacks need gradients at validation
    assert "train/loss_step" in cli.trainer.logged_metrics or "train/loss" in cli.trainer.callback_metrics


def test_print_config_subprocess() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", "--config", str(CONFIG), "--print_config"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["backbone"]["class_path"] == "robustattr.models.SmallCNN"
    assert cfg["trainer"]["inference_mode"] is False


@pytest.mark.slow
def test_five_epochs_reach_90_percent(tmp_path: Path) -> None:
    cli = build_cli(["fit", "--config", str(CONFIG), "--trainer.max_epochs", "5", *_csv(tmp_path)])
    acc = float(cli.trainer.callback_metrics["val/acc"])
    assert acc >= 0.90, acc
    # The checkpoint is self-describing and loads with weights_only=True.
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    model, dm = load_classifier(ckpt)
    assert not model.training
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        ref = cli.model.to("cpu").eval()(x)
        assert torch.allclose(model(x), ref, atol=1e-6)


def test_checkpoint_mismatch_and_missing(tmp_path: Path) -> None:
    cli = build_cli(["fit", "--config", str(CONFIG), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                     "--trainer.limit_val_batches", "1", *_csv(tmp_path)])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    bad = {"model": {"backbone": {"class_path": "robustattr.models.SmallCNN", "init_args": {"width": 8}}},
           "data": str(REPO / "configs" / "data" / "digits.yaml")}
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_classifier(ckpt, config=bad_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_classifier(tmp_path / "nope.ckpt")
    raw = torch.load(ckpt, weights_only=True)
    del raw["robustattr_config"]
    torch.save(raw, tmp_path / "noconf.ckpt")
    with pytest.raises(CheckpointError, match="pass the experiment YAML"):
        load_classifier(tmp_path / "noconf.ckpt")


class _SumEvaluator(Evaluator):
    """Toy evaluation: per-sample pixel sum and the gradient norm of the label logit."""

    def columns(self, num_classes=None):  # type: ignore[no-untyped-def]
        return ["pix", "gnorm", "idx"]

    def evaluate(self, model, x, y, index):  # type: ignore[no-untyped-def]
        xr = x.clone().requires_grad_(True)
        logit = model(xr).gather(1, y[:, None]).sum()
        (g,) = torch.autograd.grad(logit, xr)
        return {"pix": x.flatten(1).sum(1), "gnorm": g.flatten(1).norm(dim=1), "idx": index.float()}

    def summarize(self, results):  # type: ignore[no-untyped-def]
        return {"pix_mean": float(results["pix"].mean()), "gnorm_max": float(results["gnorm"].max())}


def _SumCallback(**kwargs):  # type: ignore[no-untyped-def]
    return EvalSubsetCallback(_SumEvaluator(), prefix="val_toy", **kwargs)


def _trainer(tmp_path: Path, cb: EvalSubsetCallback, inference_mode: bool) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
        callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        inference_mode=inference_mode, default_root_dir=tmp_path,
    )


def test_eval_callback_subset_and_values(tmp_path: Path) -> None:
    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN

    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(), mean=dm.mean, std=dm.std)
    cb = _SumCallback(num_samples=20, batch_size=7, progress=False)
    trainer = _trainer(tmp_path, cb, inference_mode=False)
    trainer.validate(model, datamodule=dm)
    res = cb.last_results
    assert res is not None and res["pix"].shape == (20,)
    # Same subset, independent recomputation by explicit loop over the dataset items.
    idx = cb.subset_indices(len(dm.val_set))
    assert torch.equal(res["index"], idx) and torch.equal(res["idx"].long(), idx)
    ref = torch.stack([dm.val_set[int(i)][0].sum() for i in idx])
    assert torch.allclose(res["pix"], ref, atol=1e-4)
    assert torch.isclose(trainer.callback_metrics["val_toy/pix_mean"], ref.mean(), atol=1e-4)


def test_eval_callback_refuses_inference_mode(tmp_path: Path) -> None:
    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN

    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(), mean=dm.mean, std=dm.std)
    trainer = _trainer(tmp_path, _SumCallback(num_samples=4, progress=False), inference_mode=True)
    with pytest.raises(RuntimeError, match="inference_mode=False"):
        trainer.validate(model, datamodule=dm)


def test_attribution_in_inference_mode_fails_loudly(small_cnn, digits_batch) -> None:  # type: ignore[no-untyped-def]
    from robustattr.attributions import Saliency

    x, y = digits_batch
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        Saliency()(small_cnn, x, y)
