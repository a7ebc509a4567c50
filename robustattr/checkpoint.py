"""Load a trained classifier from a checkpoint written by ``train.py`` (``weights_only=True``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from robustattr.data.common import BaseDataModule
from robustattr.lightning.module import RobustClassifier


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded: missing config, or weights that do not fit the architecture."""


def _config_yaml(ckpt: dict, config: str | Path | None) -> str:
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path.read_text()
    text = ckpt.get("robustattr_config")
    if not text:
        raise CheckpointError(
            "this checkpoint carries no robustattr config (it was not written by train.py); "
            "pass the experiment YAML with config=... / --config"
        )
    return str(text)


def build_from_config(config_yaml: str) -> tuple[RobustClassifier, BaseDataModule]:
    """Instantiate the model and DataModule described by an experiment YAML (no training)."""
    from robustattr.cli import build_cli

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(config_yaml)
        cli = build_cli(["--config", str(path), "--trainer.logger=false", "--trainer.enable_checkpointing=false"], run=False)
    return cli.model, cli.datamodule


def load_classifier(
    checkpoint: str | Path,
    config: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[RobustClassifier, BaseDataModule | None]:
    """Rebuild a :class:`RobustClassifier` from a ``train.py`` checkpoint, in eval mode.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no code execution); the
    architecture comes from the resolved YAML that ``train.py`` stores in the checkpoint, or
    from ``config`` (an experiment YAML with ``model:`` and ``data:`` sections).

    Returns:
        ``(model, datamodule)``; the DataModule is not set up (call ``.setup()``).

    Raises:
        FileNotFoundError: the checkpoint or config file does not exist.
        CheckpointError: no config is available, or the weights do not match the
            architecture (the message lists missing/unexpected keys and shape mismatches).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(f"cannot read {path} with weights_only=True: {err}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    model, datamodule = build_from_config(_config_yaml(ckpt, config))
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        raise CheckpointError(
            f"architecture mismatch between {path} and its config: "
            + "; ".join(
                part
                for part in (
                    f"missing keys: {head(missing)}" if missing else "",
                    f"unexpected keys: {head(unexpected)}" if unexpected else "",
                    f"shape mismatches: {head(mismatched)}" if mismatched else "",
                )
                if part
            )
        )
    model.load_state_dict(state)
    model.robustattr_config = ckpt.get("robustattr_config")
    return model.to(map_location).eval(), datamodule
