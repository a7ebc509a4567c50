"""W&B offline by default: one run per job, every metric in its history, the resolved config uploaded."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from robustattr.apps.train import build_cli, configure_wandb_mode
from tests.wandb_offline import find_offline_runs, read_offline_run

REPO = Path(__file__).resolve().parents[2]


def test_offline_when_no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert configure_wandb_mode() == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert configure_wandb_mode() == "online"  # a key is configured: leave W&B alone


def test_fit_logs_history_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    build_cli([
        "fit", "--config", str(REPO / "configs" / "experiment" / "digits_smallcnn.yaml"),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])
    import wandb

    wandb.finish()
    runs = find_offline_runs(tmp_path)
    assert len(runs) == 1, runs
    # wandb-core writes the run file from a separate service process: poll until flushed.
    deadline = time.monotonic() + 30
    run = read_offline_run(runs[0])
    while not run.history_keys and time.monotonic() < deadline:
        time.sleep(0.5)
        run = read_offline_run(runs[0])
    assert {"train/ce", "train/loss_epoch", "val/acc", "val/loss", "train/acc"} <= run.history_keys
    cfg = run.config["config"]
    assert isinstance(cfg, dict) and cfg["model"]["backbone"]["class_path"] == "robustattr.models.SmallCNN"


def test_reader_sees_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(mode="offline", dir=str(tmp_path), project="t")
    run.log({"scalar": 1.0, "img": wandb.Image(np.zeros((8, 8, 3), dtype=np.uint8))})
    run.log({"scalar": 2.0})
    run.finish()
    info = read_offline_run(find_offline_runs(tmp_path)[0])
    assert info.history_rows == 2 and "scalar" in info.history_keys
    assert info.media_keys == {"img"}
