"""The one configuration system: model + DataModule from YAML, shared by training and checkpoint loading.

An experiment is a YAML with ``model:`` (the :class:`~robustattr.lightning.RobustClassifier`
arguments) and ``data:`` (a DataModule ``class_path``/``init_args``); ``train.py`` adds
``trainer:`` through LightningCLI. Group files can be referenced by path relative to the file
that names them (``data: ../data/digits.yaml``) and several ``--config`` files compose, later
ones overriding earlier ones (``trainer: {callbacks+: [...]}`` appends callbacks).

Links (:func:`add_links`) copy what the DataModule knows into the model, so a mismatch cannot
be configured: ``num_classes``, the normalisation ``mean``/``std`` and, where the backbone
takes them, its ``num_classes``, ``in_channels`` and ``input_size``.

This module reads no argv and writes no files; it never builds a Trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["LINKS", "add_links", "build_parser", "instantiate"]

#: (source on the DataModule, target in the model config). Backbone targets apply only where
#: the backbone's class takes that parameter (jsonargparse skips links to absent parameters).
LINKS: tuple[tuple[str, str], ...] = (
    ("data.num_classes", "model.num_classes"),
    ("data.mean", "model.mean"),
    ("data.std", "model.std"),
    ("data.num_classes", "model.backbone.init_args.num_classes"),
    ("data.in_channels", "model.backbone.init_args.in_channels"),
    ("data.image_size", "model.backbone.init_args.input_size"),
)


def add_links(parser: Any) -> None:
    """Link the DataModule's attributes into the model arguments (applied at instantiation)."""
    for source, target in LINKS:
        parser.link_arguments(source, target, apply_on="instantiate")


def build_parser() -> Any:
    """A jsonargparse parser for ``seed_everything``, ``model`` and ``data`` (no trainer)."""
    from jsonargparse import ArgumentParser

    from robustattr.data.common import BaseDataModule
    from robustattr.lightning.module import RobustClassifier

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--seed_everything", type=Any, default=None)
    parser.add_class_arguments(RobustClassifier, "model", fail_untyped=False, sub_configs=True)
    parser.add_subclass_arguments(BaseDataModule, "data")
    add_links(parser)
    return parser


def _absolute_group_paths(cfg: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make the group paths of an experiment absolute (``data: ../data/x.yaml``, ``model: {loss: …}``).

    jsonargparse resolves paths relative to the file it reads; a YAML given as a string has no
    file, so the top-level ``data``/``model`` values and the ``model`` groups that name an
    existing file relative to ``base_dir`` are rewritten as absolute paths. Paths nested inside
    those files stay relative to them and are resolved by jsonargparse.
    """

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and (base_dir / value).is_file():
            return str((base_dir / value).resolve())
        return value

    out = {k: resolve(v) for k, v in cfg.items()}
    if isinstance(out.get("model"), dict):
        out["model"] = {k: resolve(v) for k, v in out["model"].items()}
    return out


def instantiate(config_yaml: str, base_dir: str | Path | None = None) -> tuple[Any, Any]:
    """Build ``(RobustClassifier, DataModule)`` from an experiment YAML string (no training, no setup).

    Keys other than ``seed_everything``, ``model`` and ``data`` (e.g. ``trainer``) are ignored.

    Args:
        config_yaml: the experiment YAML (a resolved config stored in a checkpoint, or the text
            of an experiment file).
        base_dir: the folder the YAML was read from, for group paths such as
            ``data: ../data/digits.yaml`` (None: the current directory).

    Raises:
        ValueError: the YAML does not describe a valid model and DataModule (the message is
            jsonargparse's, naming the offending key).
    """
    import yaml

    parsed = yaml.safe_load(config_yaml) or {}
    if not isinstance(parsed, dict):
        raise ValueError("the experiment config must be a YAML mapping with model: and data: sections")
    keep = {k: parsed[k] for k in ("seed_everything", "model", "data") if k in parsed}
    missing = [k for k in ("model", "data") if k not in keep]
    if missing:
        raise ValueError(f"the experiment config has no {' and '.join(missing)} section")
    keep = _absolute_group_paths(keep, Path(base_dir) if base_dir is not None else Path.cwd())
    parser = build_parser()
    try:
        cfg = parser.parse_object(keep)
        init = parser.instantiate_classes(cfg)
    except Exception as err:  # jsonargparse raises ArgumentError/TypeError with a useful message
        raise ValueError(f"invalid experiment config: {str(err).strip().splitlines()[0]}") from None
    return init.model, init.data
