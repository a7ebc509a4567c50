"""``certify.py`` / ``robustattr-certify``: evaluate a checkpoint with one evaluator, resumably.

Synopsis::

    certify.py {smoothing|bounds|attack} --checkpoint C [--output O] [--experiment exp.yaml]
        [--split val] [--num_samples 100 | --indices 3,17,42] [--subset_seed 0] [--batch_size B]
        [--device cpu] [--progress | --no_progress] [--debug] [--config opts.yaml] [--print_config]
        <the evaluator's own options, e.g. --radius 0.5 --n_samples 1000
         --attribution IntegratedGradients --attribution.steps 32>

Subcommands and their evaluators (the same classes, option names and YAML keys as the
validation callbacks):

- ``smoothing``: sound certificates by uniform ℓ2 smoothing
  (:class:`~robustattr.evaluation.smoothing.SmoothingEvaluator`; F. Wang & A. W.-K. Kong,
  arXiv:2405.06361, 2024).
- ``bounds``: first-order worst-case attribution deviation bounds validated by attacks
  (:class:`~robustattr.evaluation.bounds.BoundsEvaluator`; F. Wang & A. W.-K. Kong, CVPR 2023,
  arXiv:2303.00340); ``--attack_repeats`` defaults to 5 here (0 in the callback).
- ``attack``: attribution attacks and metrics
  (:class:`~robustattr.evaluation.attribution_attack.AttributionAttackEvaluator`).

``--config`` reads options of this command from YAML (what ``--print_config`` writes);
``--experiment`` is the experiment YAML that rebuilds the model and data when the checkpoint
carries none. Samples: ``--indices`` (dataset indices of the split) if given, else the first
``--num_samples`` of a permutation seeded by ``--subset_seed``, sorted (a larger
``--num_samples`` extends a smaller one). The output defaults to
``outputs/certify/<subcommand>/<first 12 hex digits of the checkpoint's sha256>``.

Everything is written through the run store (:mod:`robustattr.apps.store`): rerunning the same
command resumes; another checkpoint or another result-changing option in the same output is
refused; reports are regenerated from the rows at the end (:mod:`robustattr.apps.reports`).
Errors print one line ``certify.py: error: …`` and exit with status 2 (``--debug`` or
``ROBUSTATTR_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from robustattr.apps.reports import RunInfo, write_reports
from robustattr.apps.store import RunStore, sha256_file
from robustattr.evaluation.base import Evaluator

__all__ = [
    "DEFAULT_ROOT",
    "SPLITS",
    "Subcommand",
    "build_parser",
    "cli",
    "default_output",
    "main",
    "parse_indices",
    "run",
    "run_identity",
    "select_indices",
    "subcommands",
]

SPLITS = ("train", "val", "test")
#: parent of the default output folders ``<DEFAULT_ROOT>/<subcommand>/<sha256[:12]>``
DEFAULT_ROOT = Path("outputs") / "certify"
#: options every subcommand has (an evaluator parameter must not reuse one of these names)
COMMON_OPTIONS = (
    "config", "checkpoint", "output", "experiment", "split", "num_samples", "indices", "subset_seed",
    "batch_size", "device", "progress", "debug",
)


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its evaluator class, help and the defaults that differ from the class's.

    Attributes:
        evaluator: an :class:`~robustattr.evaluation.Evaluator` subclass; its ``__init__``
            parameters become the subcommand's options.
        help: one line for ``--help``.
        defaults: option defaults for this command (common options such as ``batch_size`` or
            evaluator parameters such as ``attack_repeats``).
    """

    evaluator: type[Evaluator]
    help: str
    defaults: Mapping[str, Any] = field(default_factory=dict)


def subcommands() -> dict[str, Subcommand]:
    """The subcommands of ``certify.py`` and their evaluators."""
    from robustattr.evaluation.attribution_attack import AttributionAttackEvaluator
    from robustattr.evaluation.bounds import BoundsEvaluator
    from robustattr.evaluation.smoothing import SmoothingEvaluator

    return {
        "smoothing": Subcommand(
            SmoothingEvaluator, "sound certificates of the attribution's cosine by uniform l2 smoothing",
            {"batch_size": 8},
        ),
        "bounds": Subcommand(
            BoundsEvaluator, "first-order worst-case attribution deviation bounds, validated by attacks",
            {"batch_size": 16, "attack_repeats": 5},
        ),
        "attack": Subcommand(
            AttributionAttackEvaluator, "attribution attacks and robustness metrics (top-k, LENS, Kendall, ...)",
            {"batch_size": 16},
        ),
    }


def default_output(subcommand: str, checkpoint_sha256: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """``<root>/<subcommand>/<sha256[:12]>``: one default folder per checkpoint and subcommand."""
    return Path(root) / subcommand / checkpoint_sha256[:12]


def parse_indices(text: str) -> list[int]:
    """``"3,17,42"`` → ``[3, 17, 42]``; ``ValueError`` for an empty or malformed list."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not re.fullmatch(r"-?\d+", p) for p in parts):
        raise ValueError(f"--indices: expected comma-separated integers, got {text!r}")
    return [int(p) for p in parts]


def select_indices(n_total: int, num_samples: int | None, indices: Sequence[int] | None, seed: int = 0) -> list[int]:
    """The samples of a run: ``indices`` if given (checked), else a seeded permutation prefix.

    ``num_samples`` (≥ 1; ``None`` or more than ``n_total``: the whole split) samples are the
    first of ``torch.randperm(n_total)`` under ``manual_seed(seed)``, sorted, so a larger
    ``num_samples`` selects a superset of a smaller one.
    """
    if n_total < 1:
        raise ValueError("the split is empty: nothing to evaluate")
    if indices is not None:
        idx = [int(i) for i in indices]
        if not idx:
            raise ValueError("indices must not be empty")
        bad = [i for i in idx if not 0 <= i < n_total]
        if bad:
            raise ValueError(f"indices out of range [0, {n_total}) of the split: {bad[:5]}")
        if len(set(idx)) != len(idx):
            raise ValueError("indices contain duplicates")
        return idx
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n = n_total if num_samples is None else min(num_samples, n_total)
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


def run_identity(
    subcommand: str,
    checkpoint_sha256: str,
    evaluator: Evaluator,
    *,
    split: str = "val",
    experiment: str | Path | None = None,
    device_type: str = "cpu",
) -> dict[str, Any]:
    """The identity :func:`run` stores in ``run.json`` (before the store adds its format version).

    Everything that changes a result: the checkpoint's sha256, the subcommand, the split, the
    sha256 of an experiment file given in place of the checkpoint's config, the device type
    and the evaluator's :meth:`~robustattr.evaluation.Evaluator.params`.
    """
    return {
        "checkpoint_sha256": checkpoint_sha256,
        "subcommand": subcommand,
        "split": split,
        "experiment_sha256": sha256_file(experiment) if experiment is not None else None,
        "device_type": device_type,
        "evaluator": evaluator.params(),
    }


def _say(text: str, quiet: bool, err: bool = False) -> None:
    if not quiet:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def run(
    subcommand: str,
    checkpoint: str | Path,
    output: str | Path | None,
    evaluator: Evaluator,
    *,
    experiment: str | Path | None = None,
    split: str = "val",
    num_samples: int | None = 100,
    indices: Sequence[int] | None = None,
    subset_seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate samples of a split with ``evaluator`` into a run store and write the reports.

    Resumable: samples with a row in ``output`` are skipped; every other sample is evaluated
    in batches of ``batch_size`` and its row is fsynced when its batch is done. Per-sample
    random streams are seeded from the dataset index, so results do not depend on how samples
    are batched up to the rounding of batched float32 kernels (measured: 1e-8 on a logit);
    rows are stored per finished batch, so a resumed run repeats the batches of an
    uninterrupted one and its rows are bitwise equal.

    Args:
        subcommand: names the run and its report (``smoothing``, ``bounds``, ``attack``, …).
        checkpoint: a ``train.py`` checkpoint (loaded with ``weights_only=True``).
        output: the run's folder; ``None``: :func:`default_output`.
        evaluator: any :class:`~robustattr.evaluation.Evaluator`.
        experiment: experiment YAML (``model:`` and ``data:``) that rebuilds the network and
            the data; needed for a checkpoint that carries no config, and when given it
            replaces the checkpoint's own (its sha256 is part of the run's identity).
        split: ``train``, ``val`` or ``test``.
        num_samples: samples drawn by :func:`select_indices` (ignored when ``indices`` is given).
        indices: explicit dataset indices of the split.
        subset_seed: seed of the sample permutation.
        batch_size: samples per call of ``evaluator.evaluate``.
        device: torch device (checked: an unavailable device is an error).
        progress: show a progress bar counting samples.
        quiet: print nothing (no warnings, no summary).

    Returns:
        ``{"output", "files", "summary", "counts", "lines"}``: the run folder, the report
        files, the evaluator's summary, sample counts and the printed summary lines.

    Raises:
        ValueError: invalid options, another run in ``output``, a locked output.
        FileNotFoundError: missing checkpoint, experiment file or dataset.
        robustattr.checkpoint.CheckpointError: unreadable or mismatching checkpoint.
    """
    from tqdm.auto import tqdm

    from robustattr.checkpoint import check_device, load_classifier

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if indices is None and num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    dev = check_device(device)
    module, dm = load_classifier(checkpoint, experiment, map_location=dev)
    if dm is None:
        raise ValueError(f"{checkpoint} has no data configuration: pass --experiment <experiment.yaml>")
    dataset = dm.split(split)
    selection = select_indices(len(dataset), num_samples, indices, subset_seed)
    sha = sha256_file(checkpoint)
    identity = run_identity(subcommand, sha, evaluator, split=split, experiment=experiment, device_type=dev.type)
    out = Path(output).expanduser() if output is not None else default_output(subcommand, sha)
    model = module.model
    columns = evaluator.columns(num_classes=getattr(dm, "num_classes", None))
    prog = _prog()
    with RunStore(out, identity, columns) as store:
        done = store.done()
        todo = [i for i in selection if i not in done]
        for w in evaluator.warnings(tuple(dataset[selection[0]][0].shape)):
            _say(f"{prog}: warning: {w}", quiet, err=True)
        bar = tqdm(total=len(selection), initial=len(selection) - len(todo), desc=subcommand, unit="sample",
                   disable=not progress or quiet, dynamic_ncols=True)
        for start in range(0, len(todo), batch_size):
            ids = todo[start : start + batch_size]
            items = [dataset[i] for i in ids]
            x = torch.stack([it[0] for it in items]).to(dev)
            y = torch.tensor([int(it[1]) for it in items], dtype=torch.long, device=dev)
            results = evaluator.evaluate(model, x, y, torch.tensor(ids, dtype=torch.long, device=dev))
            store.append(ids, results)
            bar.update(len(ids))
        bar.close()
        results = store.load(selection)
        summary = evaluator.summarize(results)
        counts = {"selected": len(selection), "resumed": len(selection) - len(todo), "evaluated": len(todo)}
        options = {"split": split, "num_samples": None if indices is not None else num_samples,
                   "indices": None if indices is None else list(indices), "subset_seed": subset_seed,
                   "batch_size": batch_size, "device": str(dev), "checkpoint": str(checkpoint),
                   "experiment": None if experiment is None else str(experiment)}
        info = RunInfo(subcommand, out, store.identity, selection, options, counts)
        files, lines = write_reports(info, results, summary)
    if counts["resumed"]:
        lines.insert(0, f"resumed: {counts['resumed']} of {counts['selected']} samples were already in {out}")
    lines.append(f"results in {out}:")
    lines += [f"  {k:>22}: {v}" for k, v in files.items()]
    _say("\n".join(lines), quiet)
    return {"output": out, "files": files, "summary": summary, "counts": counts, "lines": lines}


# --- the command line --------------------------------------------------------------------------


def _prog() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name in ("certify.py", "robustattr-certify") else "certify.py"


def build_parser(subs: Mapping[str, Subcommand] | None = None) -> Any:
    """The jsonargparse parser: one subparser per subcommand, the evaluator's options at top level."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    subs = subcommands() if subs is None else subs
    prog = _prog()
    root = ArgumentParser(
        prog=prog, exit_on_error=False,
        description="Evaluate a train.py checkpoint (certificates, bounds, attacks) into a resumable run folder.",
    )
    commands = root.add_subcommands(required=True, dest="subcommand")
    for name, spec in subs.items():
        clash = [p for p in _evaluator_params(spec.evaluator) if p in COMMON_OPTIONS]
        if clash:
            raise ValueError(f"{spec.evaluator.__name__} parameters {clash} clash with common options of {prog}")
        p = ArgumentParser(prog=f"{prog} {name}", exit_on_error=False, description=spec.help)
        p.add_argument("--config", action=ActionConfigFile, help="YAML with options of this command (see --print_config)")
        p.add_argument("--checkpoint", type=str, required=True, help="checkpoint written by train.py")
        p.add_argument("--output", type=str | None, default=None,
                       help=f"run folder; rerun to resume (default: {DEFAULT_ROOT}/{name}/<checkpoint sha256[:12]>)")
        p.add_argument("--experiment", type=str | None, default=None,
                       help="experiment YAML (model + data) for a checkpoint that carries none; replaces the stored one")
        p.add_argument("--split", type=Literal["train", "val", "test"], default="val", help="dataset split")
        p.add_argument("--num_samples", type=int | None, default=100,
                       help="samples: the first N of a permutation seeded by --subset_seed, sorted (null: the whole split)")
        p.add_argument("--indices", type=str | None, default=None,
                       help="comma-separated dataset indices of the split (replaces --num_samples)")
        p.add_argument("--subset_seed", type=int, default=0, help="seed of the sample permutation")
        p.add_argument("--batch_size", type=int, default=8, help="samples per evaluation call")
        p.add_argument("--device", type=str, default="cpu", help="torch device, e.g. cpu or cuda:0")
        p.add_argument("--progress", action=ActionYesNo, default=True, help="progress bar counting samples")
        p.add_argument("--debug", action="store_true", help="show tracebacks (also ROBUSTATTR_DEBUG=1)")
        p.add_class_arguments(spec.evaluator, None, fail_untyped=False, sub_configs=True)
        if spec.defaults:
            p.set_defaults(**dict(spec.defaults))
        commands.add_subcommand(name, p, help=spec.help)
    return root


def _evaluator_params(cls: type[Evaluator]) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [n for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def cli(argv: Sequence[str] | None = None, subs: Mapping[str, Subcommand] | None = None) -> dict[str, Any]:
    """Parse ``argv``, build the evaluator and :func:`run` it; returns :func:`run`'s result.

    Errors are raised (see :func:`main` for the one-line reporting).
    """
    subs = subcommands() if subs is None else subs
    parser = build_parser(subs)
    cfg = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    name = cfg.subcommand
    init = parser.instantiate(cfg)[name]
    spec = subs[name]
    kwargs = {k: init[k] for k in _evaluator_params(spec.evaluator) if k in init}
    evaluator = spec.evaluator(**kwargs)
    return run(
        name, init.checkpoint, init.output, evaluator, experiment=init.experiment, split=init.split,
        num_samples=init.num_samples, indices=parse_indices(init.indices) if init.indices is not None else None,
        subset_seed=init.subset_seed, batch_size=init.batch_size, device=init.device, progress=init.progress,
    )


def _one_line(err: BaseException, names: Sequence[str]) -> str:
    """A parser or library error as one line (jsonargparse's multi-line union errors condensed)."""
    msg = str(err)
    key = None
    m = re.match(r'\s*Parser key "([^"]+)":\s*(.*)', msg, re.S)
    if m:
        key, msg = m.group(1), m.group(2)
    if "Union subtypes" in msg:
        errors = [
            ln.strip()[2:] for ln in msg.splitlines()
            if ln.strip().startswith("- ") and "NoneType" not in ln and "Union subtypes" not in ln
        ]
        cls = re.search(r"class_path='([\w.]+)'", msg)
        msg = "; ".join(dict.fromkeys(errors)) or msg.splitlines()[0]
        if cls:
            msg = f"{cls.group(1).rsplit('.', 1)[-1]}: {msg}"
    text = " ".join(msg.split())
    for n in names:
        text = re.sub(rf"\b{re.escape(n)}\.(\w+)", r"--\1", text)
    return f"--{key}: {text}" if key else text


def main(argv: Sequence[str] | None = None, subs: Mapping[str, Subcommand] | None = None) -> None:
    """Entry point of ``certify.py`` / ``robustattr-certify``: one-line errors, exit status 2."""
    from jsonargparse import ArgumentError

    from robustattr.checkpoint import CheckpointError
    from robustattr.data import DatasetNotFoundError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ROBUSTATTR_DEBUG", "").lower() not in ("", "0", "false", "no")
    try:
        subs = subcommands() if subs is None else subs
        cli(args, subs)
    except (ValueError, FileNotFoundError, CheckpointError, DatasetNotFoundError, ArgumentError) as err:
        if debug:
            raise
        print(f"{_prog()}: error: {_one_line(err, list(subs or ()))}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
