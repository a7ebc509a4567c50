"""``train.py`` / ``robustattr-train``: LightningCLI over :class:`RobustClassifier` and any DataModule."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from robustattr.config import add_links
from robustattr.lightning.module import RobustClassifier


def wandb_has_credentials() -> bool:
    """True when a W&B API key is configured (environment or ``~/.netrc``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def configure_wandb_mode() -> str:
    """Default W&B to offline mode when no key is configured; returns the mode in force."""
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def resolved_config_yaml(parser, cfg, subcommand: str | None) -> str:  # type: ignore[no-untyped-def]
    """YAML of the ``model`` and ``data`` sections (plus ``seed_everything``) of a parsed config."""
    import yaml

    sub = parser._subcommands_action._name_parser_map[subcommand] if subcommand else parser
    full = yaml.safe_load(sub.dump(cfg, skip_check=True))
    keep = {k: full[k] for k in ("seed_everything", "model", "data") if k in full}
    return yaml.safe_dump(keep, sort_keys=False)


TRAINER_DEFAULTS: dict[str, object] = {
    # Callbacks need gradients at validation; torch.inference_mode cannot be undone by enable_grad.
    "inference_mode": False,
    "default_root_dir": "outputs",
    "logger": {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"project": "robustattr", "save_dir": "outputs"},
    },
}


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` to the log dir (Lightning's behaviour) and upload it to the logger.

    With W&B the resolved config appears as the run's config (rank zero only, one run per job).
    """

    def save_config(self, trainer, pl_module, stage: str) -> None:  # type: ignore[no-untyped-def]
        import yaml

        if trainer.logger is None:
            return
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))
        trainer.logger.log_hyperparams({"config": resolved})


class RobustCLI(LightningCLI):
    """LightningCLI with robustattr's defaults: data → model links and inference_mode=False."""

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        add_links(parser)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Keep the resolved experiment config (model + data) with the model so checkpoints are
        # self-describing: robustattr.checkpoint.load_classifier rebuilds the network from it.
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self.model.robustattr_config = resolved_config_yaml(self.parser, cfg, self.subcommand)


def build_cli(args: list[str] | None = None, run: bool = True) -> RobustCLI:
    """Construct the CLI (``run=False`` instantiates without running a subcommand)."""
    configure_wandb_mode()
    from robustattr.data.common import BaseDataModule

    return RobustCLI(
        RobustClassifier,
        BaseDataModule,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def train_main(args: list[str] | None = None) -> None:
    """``robustattr-train``: ``fit``/``validate``/``test`` with ``--config configs/….yaml``."""
    build_cli(args if args is not None else sys.argv[1:])


main = train_main
