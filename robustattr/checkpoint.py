"""Load a trained classifier from a checkpoint written by ``train.py`` (``weights_only=True``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from robustattr.data.common import BaseDataModule
from robustattr.lightning.module import RobustClassifier


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded: missing config, or weights that do not fit the architecture."""


def _config_yaml(ckpt: dict, config: str | Path | None) -> tuple[str, Path | None]:
    """The experiment YAML and the folder its group paths are relative to."""
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path.read_text(), path.resolve().parent
    text = ckpt.get("robustattr_config")
    if not text:
        raise CheckpointError(
            "this checkpoint carries no robustattr config (it was not written by train.py); "
            "pass the experiment YAML with config=... / --config"
        )
    return str(text), None


def build_from_config(config_yaml: str, base_dir: str | Path | None = None) -> tuple[RobustClassifier, BaseDataModule]:
    """Instantiate the model and DataModule described by an experiment YAML (no training).

    ``base_dir`` is the folder the YAML was read from (group paths such as
    ``data: ../data/digits.yaml`` are relative to it).
    """
    from robustattr.config import instantiate

    try:
        return instantiate(config_yaml, base_dir)
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)`` if it exists on this machine, else ``ValueError`` saying so."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available: this machine has no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available on this machine")
    return dev


def _read(path: Path, map_location: torch.device) -> dict:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty, not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (not a torch.save zip archive)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is a corrupt checkpoint (truncated or damaged zip archive)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is a corrupt checkpoint: {first[:200]}") from None
    except Exception as err:  # noqa: BLE001 - weights_only refuses pickled code objects
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} cannot be read safely with weights_only=True (it holds objects other than tensors): {first[:160]}") from None
    return ckpt


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
        ValueError: ``map_location`` names a device this machine does not have.
        CheckpointError: the file is not a checkpoint, is corrupt, carries no config, or its
            weights are from another architecture (the message lists missing/unexpected keys
            and shape mismatches).
    """
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    device = check_device(map_location)
    ckpt = _read(path, device)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is a PyTorch file but not a Lightning checkpoint (no 'state_dict')")
    model, datamodule = build_from_config(*_config_yaml(ckpt, config))
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
            f"{path} is from another architecture than its config describes: "
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
    return model.to(device).eval(), datamodule
