"""Fixtures of the application tests: tiny digits checkpoints written by train.py's CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "experiment" / "digits_smallcnn.yaml"


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SmallCNN (width 8, hidden 32) trained for 15 batches on digits by train.py's CLI; its checkpoint."""
    from robustattr.apps.train import build_cli

    tmp = tmp_path_factory.mktemp("ckpt")
    cli = build_cli(
        [
            "fit", "--config", str(CONFIG), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "15",
            "--trainer.limit_val_batches", "1", "--model.backbone.init_args.width", "8",
            "--model.backbone.init_args.hidden", "32", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(tmp), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp),
        ]
    )
    return Path(cli.trainer.checkpoint_callback.best_model_path)


@pytest.fixture(scope="session")
def other_checkpoint(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture and config with one weight changed: another checkpoint (another sha256)."""
    ckpt = torch.load(digits_checkpoint, map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1e-3
    path = tmp_path_factory.mktemp("ckpt2") / "other.ckpt"
    torch.save(ckpt, path)
    return path
