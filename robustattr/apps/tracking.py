"""Log a finished ``certify.py`` run to Weights & Biases: one W&B run per certification job.

Called by rank 0 only, after the reports are written, with the merged per-sample results. The
W&B run holds:

- **config**: the run's identity (checkpoint sha256, subcommand, split, device type) and the
  evaluator's parameters flattened (``evaluator.radius``, ``evaluator.attribution``, …), the
  options (selection, batch size, world size) and the sample counts;
- **per_sample**: a table with the rows of ``certify.tsv`` / ``bounds.tsv`` / ``attack.tsv``
  (not certified / undefined values as empty cells);
- **curves** (smoothing): ``cos_vs_eps`` (median and 25–75 % certified cosine, fraction
  certified, per ε) and ``frac_certified_vs_eps`` (fraction with certified cosine ≥ τ per τ),
  as W&B line plots, plus every PNG of the report as an image;
- **summary**: the evaluator's summary numbers (undefined or not certified: absent).

W&B runs offline unless a W&B key is configured (``WANDB_API_KEY`` or ``~/.netrc``) or
``WANDB_MODE`` says otherwise (:func:`robustattr.apps.train.configure_wandb_mode`); offline runs
are written under ``WANDB_DIR`` (default: the run's output folder) and uploaded later with
``wandb sync``. ``WANDB_MODE=disabled`` turns logging off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from robustattr.apps.reports import RunInfo, report_for

__all__ = ["log_run", "wandb_config"]


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list) and any(isinstance(v, Mapping) for v in obj):
        return {prefix[:-1]: str(obj)}
    return {prefix[:-1]: obj}


def _cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def wandb_config(info: RunInfo) -> dict[str, Any]:
    """The W&B config of a run: identity and evaluator parameters (flattened), options, counts."""
    ident = dict(info.identity)
    params = ident.pop("evaluator", {})
    return {
        **_flat(ident),
        **{f"evaluator.{k}" if k else "evaluator": v for k, v in _flat(params).items()},
        **{f"options.{k}": v for k, v in _flat(info.options).items()},
        **{f"counts.{k}": v for k, v in info.counts.items()},
        "num_samples_selected": len(info.selection),
    }


def log_run(
    info: RunInfo,
    results: Mapping[str, Tensor],
    summary: Mapping[str, float],
    files: Mapping[str, Path],
    project: str | None = "robustattr",
) -> str | None:
    """Log one finished run (rank 0 only); returns a line saying where it went, ``None`` if disabled.

    Args:
        info: the run (identity, selection, options, counts).
        results: ``{column: Tensor[N]}`` in selection order.
        summary: the evaluator's summary.
        files: the report files (PNG files are logged as images).
        project: the W&B project.
    """
    from robustattr.apps.train import configure_wandb_mode

    mode = configure_wandb_mode()
    if mode == "disabled":
        return None
    import wandb

    sha = str(info.identity.get("checkpoint_sha256", ""))[:12]
    run = wandb.init(
        project=project, name=f"certify-{info.subcommand}-{sha}", job_type=f"certify-{info.subcommand}",
        dir=os.environ.get("WANDB_DIR") or str(info.output), config=wandb_config(info),
        settings=wandb.Settings(silent=True, console="off"),
    )
    try:
        columns = list(results)
        values = {c: results[c].tolist() for c in columns}
        rows = [[i, *(_cell(values[c][b]) for c in columns)] for b, i in enumerate(info.selection)]
        log: dict[str, Any] = {"per_sample": wandb.Table(columns=["index", *columns], data=rows)}
        for name, curve in report_for(info.subcommand).curves(info, results).items():
            ys = [[_cell(v) for v in series] for series in curve.series.values()]
            log[name] = wandb.plot.line_series(
                xs=curve.x, ys=ys, keys=list(curve.series), title=curve.title, xname=curve.xname
            )
        for key, path in files.items():
            if Path(path).suffix == ".png":
                log[f"plots/{key}"] = wandb.Image(str(path))
        run.log(log)
        run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        where = f"{mode}, {run.settings.sync_dir}" if mode == "offline" else str(run.url)
    finally:
        run.finish()
    return where
