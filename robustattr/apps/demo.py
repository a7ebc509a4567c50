"""``make demo``: train SmallCNN on the bundled digits (W&B offline), then certify the checkpoint.

Certifies 32 validation samples (N = 1000) into ``<out>/certify/smoothing/<checkpoint sha256[:12]>``
and prints where the checkpoint, the logs, the W&B run and the certification report are.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Run the demo; returns the paths it printed (also used by the smoke test)."""
    from robustattr.apps.train import build_cli, configure_wandb_mode

    mode = configure_wandb_mode()
    out = Path(argv[0]) if argv else REPO / "outputs"
    config = REPO / "configs" / "experiment" / "digits_smallcnn.yaml"
    cli = build_cli(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out)],
        run=True,
    )
    trainer = cli.trainer
    ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    paths = {"checkpoint": ckpt, "logs": str(out)}
    logger = trainer.logger
    if logger is not None and type(logger).__name__ == "WandbLogger":
        paths["wandb_run"] = str(Path(logger.experiment.dir).parent)
    val_acc = trainer.callback_metrics.get("val/acc")
    if ckpt:
        from robustattr.apps.certify import default_output, run
        from robustattr.apps.store import sha256_file
        from robustattr.evaluation.smoothing import SmoothingEvaluator

        # one folder per checkpoint: a rerun trains a new checkpoint and certifies it beside the old ones
        target = default_output("smoothing", sha256_file(ckpt), root=out / "certify")
        report = run("smoothing", ckpt, target, SmoothingEvaluator(n_samples=1000), num_samples=32)
        paths["certify_output"] = str(report["output"])
        paths["certify_summary"] = str(report["files"]["summary"])
    print("\n=== robustattr demo finished ===")
    if val_acc is not None:
        print(f"validation accuracy: {float(val_acc):.3f}")
    print(f"W&B mode: {mode} (sync later with `wandb sync <run dir>`)")
    for k, v in paths.items():
        print(f"{k:>16}: {v}")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
