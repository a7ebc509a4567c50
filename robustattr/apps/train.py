"""``train.py`` / ``robustattr-train``: LightningCLI over :class:`RobustClassifier` and any DataModule.

``python train.py fit --config configs/experiment/digits_smallcnn.yaml`` (several ``--config``
files compose, later ones override). At the end of ``fit``/``validate``/``test`` rank zero prints
the checkpoint path and a sorted table of the last validation (test) metrics, the evaluation
callbacks' ``val_attr/…``, ``val_cert/…`` and ``val_bound/…`` included.

Errors in what the user asked for (the library's ``ValueError``, a missing file or dataset, an
unreadable checkpoint) are printed as one line ``train.py: error: <message>`` with exit status 2;
``--debug`` (anywhere on the command line) or ``ROBUSTATTR_DEBUG=1`` shows the traceback instead.
jsonargparse's own usage errors keep their form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from robustattr.checkpoint import CheckpointError
from robustattr.config import add_links
from robustattr.lightning.module import RobustClassifier

#: Environment variable that makes the CLI show tracebacks (set by ``--debug`` for DDP workers too).
DEBUG_ENV = "ROBUSTATTR_DEBUG"
#: Exceptions reported as one line (``DatasetNotFoundError`` is a ``FileNotFoundError``).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, CheckpointError)


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


def _to_float(value: Any) -> float:
    """A logged metric (0-d tensor or number) as a Python float."""
    return float(value.detach().cpu()) if hasattr(value, "detach") else float(value)


def metrics_table(metrics: Mapping[str, Any], stage: str = "val") -> str:
    """Aligned two-column table of the metrics of ``stage`` (``val/…``, ``val_attr/…``, …), sorted by key.

    Args:
        metrics: logged values, e.g. ``trainer.callback_metrics`` (scalar tensors or numbers).
        stage: key prefix: keys whose first path component is ``stage`` or ``stage_<name>``.

    Returns:
        The table (header line first), or ``""`` when no key matches.
    """
    rows = []
    for key in sorted(metrics):
        head = key.split("/", 1)[0]
        if head != stage and not head.startswith(f"{stage}_"):
            continue
        try:
            rows.append((key, f"{_to_float(metrics[key]):.6g}"))
        except (TypeError, ValueError, RuntimeError):  # a non-scalar entry: not a table row
            continue
    if not rows:
        return ""
    kw = max(len("metric"), *(len(k) for k, _ in rows))
    vw = max(len("value"), *(len(v) for _, v in rows))
    lines = [f"{'metric':<{kw}}  {'value':>{vw}}", f"{'-' * kw}  {'-' * vw}"]
    lines += [f"{k:<{kw}}  {v:>{vw}}" for k, v in rows]
    return "\n".join(lines)


def checkpoint_line(trainer: Any) -> str:
    """Where the checkpoint of a finished ``fit`` is: the best one, or the last one without a monitor."""
    cb = trainer.checkpoint_callback
    if cb is None:
        return "checkpoint: none (checkpointing is disabled)"
    if cb.monitor:
        label, path = f"best checkpoint ({cb.monitor}, mode={cb.mode})", cb.best_model_path
    else:
        label, path = "last checkpoint", cb.last_model_path or cb.best_model_path
    if not path:
        reason = " (fast_dev_run)" if trainer.fast_dev_run else ""
        return f"{label}: none saved{reason}"
    return f"{label}: {path}"


def training_summary(trainer: Any, subcommand: str) -> str:
    """The text printed at the end of ``fit``/``validate``/``test``: checkpoint and metrics table.

    Args:
        trainer: the Lightning ``Trainer`` that ran ``subcommand``.
        subcommand: ``"fit"``, ``"validate"`` or ``"test"``.
    """
    if subcommand == "fit":
        head = checkpoint_line(trainer)
    else:
        done = {"validate": "validated", "test": "tested"}.get(subcommand, subcommand)
        head = f"{done} checkpoint: {trainer.ckpt_path}" if trainer.ckpt_path else f"{done}: the weights in memory (no --ckpt_path)"
    stage = "test" if subcommand == "test" else "val"
    table = metrics_table(trainer.callback_metrics, stage)
    body = table if table else f"(no {stage} metrics were logged)"
    return f"\n=== {subcommand} finished ===\n{head}\n{body}"


class RobustCLI(LightningCLI):
    """LightningCLI with robustattr's defaults: data → model links, inference_mode=False, a summary at the end."""

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        add_links(parser)

    def _print_summary(self, subcommand: str) -> None:
        if self.trainer.is_global_zero:
            print(training_summary(self.trainer, subcommand), flush=True)

    def after_fit(self) -> None:
        """Rank zero prints the checkpoint path and the last validation metrics."""
        self._print_summary("fit")

    def after_validate(self) -> None:
        """Rank zero prints the validated checkpoint and the validation metrics."""
        self._print_summary("validate")

    def after_test(self) -> None:
        """Rank zero prints the tested checkpoint and the test metrics."""
        self._print_summary("test")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Keep the resolved experiment config (model + data) with the model so checkpoints are
        # self-describing: robustattr.checkpoint.load_classifier rebuilds the network from it.
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self.model.robustattr_config = resolved_config_yaml(self.parser, cfg, self.subcommand)


def build_cli(args: list[str] | None = None, run: bool = True, cli_class: type[RobustCLI] = RobustCLI) -> RobustCLI:
    """Construct the CLI (``run=False`` instantiates without running a subcommand).

    Args:
        args: command line without the program name (None: ``sys.argv[1:]``).
        run: parse a subcommand (``fit``, ``validate``, …) and run it.
        cli_class: :class:`RobustCLI` or a subclass (tests use one that stops after parsing).
    """
    configure_wandb_mode()
    from robustattr.data.common import BaseDataModule

    return cli_class(
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


def debug_enabled() -> bool:
    """True when tracebacks were asked for (``--debug`` or ``ROBUSTATTR_DEBUG`` set to a true value)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _raised_in_robustattr(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("robustattr")


def user_error(err: BaseException) -> BaseException | None:
    """The innermost error of ``err``'s chain that is the user's to fix, or None (a bug: show the traceback).

    That is a ``ValueError`` raised by robustattr (bad hyper-parameters, bad input), any
    ``FileNotFoundError`` (``DatasetNotFoundError`` included) or a ``CheckpointError``. The chain
    is followed as Python prints it (``__cause__``, else the unsuppressed ``__context__``), so the
    library's message is found under jsonargparse's wrapper when a class rejects its arguments.
    """
    found, seen, cur = None, set(), err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (FileNotFoundError, CheckpointError)) or (isinstance(cur, ValueError) and _raised_in_robustattr(cur)):
            found = cur
        cur = cur.__cause__ if cur.__cause__ is not None else (None if cur.__suppress_context__ else cur.__context__)
    return found


def one_line(err: BaseException) -> str:
    """``err``'s message on one line, prefixed with the configured class whose constructor rejected it.

    That is the outermost robustattr constructor on the error's stack (e.g. ``PGDAdversarialLoss``
    rather than the ``PGD`` attack it builds), the class the user named in the config.
    """
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    tb, owner = err.__traceback__, None
    while tb is not None and owner is None:
        frame = tb.tb_frame
        obj = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        module = type(obj).__module__ if obj is not None else ""
        if module.startswith("robustattr.") and not module.startswith("robustattr.apps"):
            owner = type(obj).__name__
        tb = tb.tb_next
    return f"{owner}: {text}" if owner and not text.startswith(owner) else text


def train_main(args: list[str] | None = None) -> None:
    """``robustattr-train``: ``fit``/``validate``/``test`` with ``--config configs/experiment/….yaml``.

    Args:
        args: the command line without the program name (None: ``sys.argv[1:]``).

    Raises:
        SystemExit: status 2 with one line on stderr for errors the user can fix (see
            :func:`user_error`); usage errors exit as jsonargparse decides.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # DDP workers re-run this command line: they inherit the flag
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv (and DDP re-launches it) without --debug
    try:
        build_cli(None if args is None else argv)
    except Exception as err:
        culprit = user_error(err)
        if culprit is None or debug_enabled():
            raise
        prog = Path(sys.argv[0]).name if args is None else "train.py"
        print(f"{prog}: error: {one_line(culprit)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


main = train_main
