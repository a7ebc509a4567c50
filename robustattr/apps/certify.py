"""``certify.py`` / ``robustattr-certify``: evaluate a checkpoint with one evaluator, resumably.

Synopsis::

    certify.py {smoothing|bounds|attack|robustness} --checkpoint C [--output O] [--experiment exp.yaml]
        [--split val] [--num_samples 100 | --indices 3,17,42] [--subset_seed 0] [--batch_size B]
        [--device cpu|cuda|cuda:1] [--progress | --no_progress] [--merge_only]
        [--wandb true|false] [--wandb_project P] [--debug] [--config opts.yaml] [--print_config]
        <the evaluator's own options, e.g. --radius 0.5 --n_samples 1000
         --attribution IntegratedGradients --attribution.steps 32>

    # the same command on several processes: only the launcher changes
    torchrun --standalone --nproc_per_node 8 certify.py smoothing --device cuda …
    srun certify.py smoothing --device cuda …     # one SLURM task per GPU

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
- ``robustness``: Quantus-definition robustness metrics of the attributions (Max-Sensitivity,
  Local Lipschitz Estimate, Relative Input Stability, … with ``--metrics``;
  :class:`~robustattr.evaluation.robustness.RobustnessEvaluator`; A. Hedström et al., JMLR 2023,
  arXiv:2202.06861).

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

**Several processes.** Started by torchrun (one or many nodes) or by ``srun`` under SLURM,
every process joins the launcher's ``torch.distributed`` group (:mod:`robustattr.apps.distributed`;
``gloo`` on CPU, ``nccl`` on CUDA, ``--device cuda`` = ``cuda:<local rank>``) and evaluates whole
batches dealt to it by cost; each rank appends to its own shard of the run store and rank 0
merges the shards into the one report. Results equal one process's exactly (see :func:`run`),
and a rerun with any number of processes resumes. ``--merge_only`` rebuilds the reports from
the shards without evaluating (e.g. after collecting shards written on several nodes).

**W&B** (``--wandb``, default true; offline unless a W&B key is configured): one run per job,
from rank 0: parameters, the per-sample table, the summary and the curves
(:mod:`robustattr.apps.tracking`).
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

from robustattr.apps.distributed import (
    DistContext,
    SharedError,
    init_distributed,
    launch_environment,
    launcher_rank,
    resolve_device,
)
from robustattr.apps.reports import RunInfo, write_reports
from robustattr.apps.store import RunStore, sha256_file
from robustattr.evaluation.base import Evaluator
from robustattr.evaluation.sharding import Batch, assign_batches

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
    "batch_size", "device", "progress", "debug", "merge_only", "wandb", "wandb_project",
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
    from robustattr.evaluation.robustness import RobustnessEvaluator
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
        "robustness": Subcommand(
            RobustnessEvaluator,
            "Quantus-definition robustness metrics (Max-Sensitivity, Local Lipschitz Estimate, Relative Input Stability, ...)",
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


@dataclass
class _Setup:
    """What every rank builds before the work: model, data, selection, identity, store columns."""

    model: torch.nn.Module
    dataset: Any
    selection: list[int]
    identity: dict[str, Any]
    output: Path
    columns: list[str]
    input_shape: tuple[int, ...]


def _setup(
    subcommand: str, checkpoint: str | Path, output: str | Path | None, evaluator: Evaluator,
    experiment: str | Path | None, split: str, num_samples: int | None, indices: Sequence[int] | None,
    subset_seed: int, dev: torch.device, map_location: torch.device,
) -> _Setup:
    from robustattr.checkpoint import load_classifier

    module, dm = load_classifier(checkpoint, experiment, map_location=map_location)
    if dm is None:
        raise ValueError(f"{checkpoint} has no data configuration: pass --experiment <experiment.yaml>")
    dataset = dm.split(split)
    selection = select_indices(len(dataset), num_samples, indices, subset_seed)
    sha = sha256_file(checkpoint)
    identity = run_identity(subcommand, sha, evaluator, split=split, experiment=experiment, device_type=dev.type)
    out = Path(output).expanduser() if output is not None else default_output(subcommand, sha)
    columns = evaluator.columns(num_classes=getattr(dm, "num_classes", None))
    return _Setup(module.model, dataset, selection, identity, out, columns, tuple(dataset[selection[0]][0].shape))


class _ShardProgress:
    """Rank 0's view of the shards' growth: rows appended by each rank since the plan.

    Shards only grow after the plan (a writer truncates a torn line only when it opens), so
    the rows a rank finished are the complete lines appended to its shard since then.
    """

    def __init__(self, store: RunStore, world_size: int) -> None:
        self.paths = [store.shard_path(str(r)) for r in range(world_size)]
        self.offsets = [p.stat().st_size if p.exists() else 0 for p in self.paths]
        self.rows = [0] * world_size

    def poll(self) -> int:
        """Read what was appended since the last call; returns the number of new rows."""
        new = 0
        for r, path in enumerate(self.paths):
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[r])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            k = data[:end].count(b"\n")
            self.offsets[r] += end
            self.rows[r] += k
            new += k
        return new


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
    merge_only: bool = False,
    wandb: bool = False,
    wandb_project: str | None = "robustattr",
    poll_seconds: float = 0.5,
) -> dict[str, Any]:
    """Evaluate samples of a split with ``evaluator`` into a run store and write the reports.

    Runs as one process, or as one of the processes of a distributed launcher (torchrun,
    SLURM's srun; :mod:`robustattr.apps.distributed`), with the same results:

    - **Batches** of ``batch_size`` are formed over the whole selection in selection order
      (:func:`~robustattr.evaluation.sharding.assign_batches`), so a sample's batch-mates never
      depend on the number of processes or on what is already done. Batched float32 kernels
      round differently for other batch compositions (measured: ~1e-8 on a logit); with fixed
      batches, per-sample seeds (``seed + dataset index``), the same device type and the same
      threads per process, 1 process and W processes write bitwise equal rows.
    - **Resume**: batches whose samples all have rows are skipped; a batch with some rows is
      evaluated whole and only its missing rows are kept (its other members are recomputed
      and discarded), so the missing samples get exactly the rows of an uninterrupted run.
      Extending a selection (a larger ``num_samples``) therefore recomputes the finished
      batch-mates of new samples.
    - **Sharding**: the remaining batches are dealt to the ranks by cost (batch size ×
      ``evaluator.cost()``, greedy longest-processing-time; round robin for equal costs). Each
      rank appends the rows of each finished batch to its own shard ``rows/<rank>.tsv`` and
      fsyncs, so a rank that dies loses at most its batch in flight.
    - **Rank 0** writes ``run.json`` first (the others open their shards after it), shows one
      progress bar counting the samples finished by all ranks (it reads the shards' growth
      between its own batches; no collective inside the work loop), waits for the other
      ranks' rows, merges every shard into the reports, logs W&B and prints the summary.
      A rank that stops before its rows are complete (its shard lock released) makes rank 0
      fail with a message saying to rerun, which resumes.

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
        device: torch device (checked: an unavailable device is an error); ``cuda`` without an
            index is ``cuda:<local rank>`` (one GPU per process under a launcher).
        progress: show a progress bar counting samples (rank 0).
        quiet: print nothing (no warnings, no summary).
        merge_only: evaluate nothing: rebuild the reports from the shards already in
            ``output`` (every selected sample must have a row). Under a launcher only rank 0
            works; the device is used only for the identity (it need not exist here).
        wandb: log one W&B run from rank 0 (:mod:`robustattr.apps.tracking`): parameters,
            per-sample table, curves, summary. Offline unless a W&B key is configured.
        wandb_project: the W&B project.
        poll_seconds: how often rank 0 reads the shards while it waits for the other ranks.

    Returns:
        ``{"output", "files", "summary", "counts", "lines", "rank", "world_size"}``: the run
        folder, the report files, the evaluator's summary, sample counts and the printed
        summary lines (on ranks other than 0: no files, summary or lines, and the counts of
        that rank's own work).

    Raises:
        ValueError: invalid options, another run in ``output`` or in one of its shards, a
            locked output, a rank that stopped early.
        FileNotFoundError: missing checkpoint, experiment file or dataset.
        robustattr.checkpoint.CheckpointError: unreadable or mismatching checkpoint.
    """
    from robustattr.checkpoint import check_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if indices is None and num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not poll_seconds > 0:
        raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
    launcher, rank, world, local = launch_environment()
    options = {"split": split, "num_samples": None if indices is not None else num_samples,
               "indices": None if indices is None else list(indices), "subset_seed": subset_seed,
               "batch_size": batch_size, "checkpoint": str(checkpoint),
               "experiment": None if experiment is None else str(experiment)}
    common = (subcommand, checkpoint, output, evaluator, experiment, split, num_samples, indices, subset_seed)
    if merge_only:
        if rank != 0:
            return {"output": None, "files": {}, "summary": None, "counts": {}, "lines": [], "rank": rank, "world_size": world}
        dev = _parse_device(resolve_device(device, local))
        setup = _setup(*common, dev, torch.device("cpu"))
        options.update(device=str(dev), world_size=0, launcher=launcher, merge_only=True)
        with RunStore(setup.output, setup.identity, setup.columns, writer=None, create=False) as store:
            n = len(setup.selection)
            counts = {"selected": n, "resumed": n, "evaluated": 0, "recomputed": 0}
            return _finish(subcommand, store, setup, evaluator, options, counts, quiet, wandb, wandb_project, world)
    dev = check_device(resolve_device(device, local))
    ctx = init_distributed(dev)
    try:
        return _run(ctx, common, dev, evaluator, options, progress, quiet, wandb, wandb_project, poll_seconds)
    finally:
        ctx.close()


def _parse_device(device: str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None


def _run(
    ctx: DistContext, common: tuple[Any, ...], dev: torch.device, evaluator: Evaluator, options: dict[str, Any],
    progress: bool, quiet: bool, wandb: bool, wandb_project: str | None, poll_seconds: float,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    subcommand = common[0]
    quiet = quiet or not ctx.is_primary
    setup: _Setup | None = None
    error: Exception | None = None
    try:
        setup = _setup(*common, dev, dev)
    except Exception as err:  # noqa: BLE001 - every rank learns that one failed (no rank waits forever)
        error = err
    ctx.agree(error)
    assert setup is not None
    store = RunStore(setup.output, setup.identity, setup.columns, writer=str(ctx.rank), primary=ctx.is_primary)
    try:
        for opening in (True, False):  # rank 0 first (writes run.json), then the others
            error = None
            if ctx.is_primary == opening:
                try:
                    store.open()
                except Exception as err:  # noqa: BLE001
                    error = err
            ctx.agree(error)
        plan: list[list[Batch]] | None = None
        resumed = 0
        watch: _ShardProgress | None = None
        error = None
        if ctx.is_primary:
            try:
                done = store.done()
                resumed = sum(1 for i in setup.selection if i in done)
                plan = assign_batches(setup.selection, options["batch_size"], ctx.world_size, done, evaluator.cost())
                watch = _ShardProgress(store, ctx.world_size)
            except Exception as err:  # noqa: BLE001
                error = err
        ctx.agree(error)
        plan, resumed = ctx.broadcast((plan, resumed))
        assert plan is not None
        mine = plan[ctx.rank]
        for w in evaluator.warnings(setup.input_shape):
            _say(f"{_prog()}: warning: {w}", quiet, err=True)
        n_sel = len(setup.selection)
        bar = tqdm(total=n_sel, initial=resumed, desc=subcommand, unit="sample",
                   disable=not progress or quiet, dynamic_ncols=True)
        for batch in mine:
            items = [setup.dataset[i] for i in batch.indices]
            x = torch.stack([it[0] for it in items]).to(dev)
            y = torch.tensor([int(it[1]) for it in items], dtype=torch.long, device=dev)
            results = evaluator.evaluate(setup.model, x, y, torch.tensor(batch.indices, dtype=torch.long, device=dev))
            if batch.todo != batch.indices:
                todo = set(batch.todo)
                keep = torch.tensor([p for p, i in enumerate(batch.indices) if i in todo], dtype=torch.long, device=dev)
                results = {c: v.index_select(0, keep.to(v.device)) for c, v in results.items()}
            store.append(batch.todo, results)
            if watch is not None:
                bar.update(watch.poll())
        recomputed = sum(len(b.indices) - len(b.todo) for share in plan for b in share)
        if not ctx.is_primary:
            own = sum(len(b.todo) for b in mine)
            bar.close()
            return {"output": setup.output, "files": {}, "summary": None, "lines": [], "rank": ctx.rank,
                    "world_size": ctx.world_size, "counts": {"selected": n_sel, "evaluated": own}}
        assert watch is not None
        _wait_for_ranks(store, watch, plan, bar, poll_seconds)
        bar.close()
        counts = {"selected": n_sel, "resumed": resumed, "evaluated": n_sel - resumed, "recomputed": recomputed}
        options.update(device=str(dev), world_size=ctx.world_size, launcher=ctx.launcher, merge_only=False)
        return _finish(subcommand, store, setup, evaluator, options, counts, quiet, wandb, wandb_project, ctx.world_size)
    finally:
        store.close()


def _wait_for_ranks(store: RunStore, watch: _ShardProgress, plan: list[list[Batch]], bar: Any, poll_seconds: float) -> None:
    """Rank 0, after its own batches: follow the other shards until every rank's rows are in.

    A rank whose shard lock is free (it exited) while its rows are incomplete stopped early:
    a ``ValueError`` says so (the rows it wrote are kept; rerunning resumes).
    """
    import time

    expected = [sum(len(b.todo) for b in share) for share in plan]
    while True:
        bar.update(watch.poll())
        missing = [r for r, n in enumerate(expected) if watch.rows[r] < n]
        if not missing:
            return
        stopped = [r for r in missing if r != 0 and not store.writer_active(str(r))]
        if stopped:
            bar.update(watch.poll())  # its last rows may have landed just before it released the lock
            stopped = [r for r in stopped if watch.rows[r] < expected[r]]
        if 0 in missing or stopped:
            r = stopped[0] if stopped else 0
            raise ValueError(
                f"rank {r} stopped after {watch.rows[r]} of its {expected[r]} samples; "
                f"its finished rows are kept in {store.path}: rerun the same command (any number of processes) to resume"
            )
        time.sleep(poll_seconds)


def _finish(
    subcommand: str, store: RunStore, setup: _Setup, evaluator: Evaluator, options: dict[str, Any],
    counts: dict[str, int], quiet: bool, wandb: bool, wandb_project: str | None, world_size: int,
) -> dict[str, Any]:
    """Rank 0: merge every shard, summarise, write the reports, log W&B, print the summary."""
    from robustattr.apps.store import RunStoreError

    try:
        results = store.load(setup.selection)
    except RunStoreError as err:
        if options.get("merge_only"):
            raise RunStoreError(f"{err}; run without --merge_only to evaluate them") from None
        raise
    summary = evaluator.summarize(results)
    out = setup.output
    info = RunInfo(subcommand, out, store.identity, setup.selection, options, counts)
    files, lines = write_reports(info, results, summary)
    if counts["resumed"] and not options.get("merge_only"):
        lines.insert(0, f"resumed: {counts['resumed']} of {counts['selected']} samples were already in {out}")
    if options.get("merge_only"):
        shards = len(store.row_files())
        lines.insert(0, f"merged: {counts['selected']} samples from {shards} shard{'s' * (shards != 1)} in {out}")
    elif world_size > 1:
        lines.insert(0, f"evaluated by {world_size} processes ({options['launcher']}); shards merged")
    if wandb:
        from robustattr.apps.tracking import log_run

        where = log_run(info, results, summary, files, project=wandb_project)
        if where is not None:
            lines.append(f"W&B run: {where}")
    lines.append(f"results in {out}:")
    lines += [f"  {k:>22}: {v}" for k, v in files.items()]
    _say("\n".join(lines), quiet)
    return {"output": out, "files": files, "summary": summary, "counts": counts, "lines": lines, "rank": 0,
            "world_size": world_size}


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
        p.add_argument("--device", type=str, default="cpu",
                       help="torch device, e.g. cpu, cuda:0, or cuda (= cuda:<local rank> under torchrun/srun)")
        p.add_argument("--progress", action=ActionYesNo, default=True, help="progress bar counting samples")
        p.add_argument("--merge_only", action=ActionYesNo, nargs="?", default=False,
                       help="evaluate nothing: rebuild the reports from the shards in --output")
        p.add_argument("--wandb", action=ActionYesNo, nargs="?", default=True,
                       help="log one W&B run (rank 0; offline unless a W&B key is configured)")
        p.add_argument("--wandb_project", type=str | None, default="robustattr", help="W&B project")
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
        merge_only=init.merge_only, wandb=init.wandb, wandb_project=init.wandb_project,
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
    """Entry point of ``certify.py`` / ``robustattr-certify``: one-line errors, exit status 2.

    Under a distributed launcher, rank 0 prints errors as in one process; another rank prints
    ``certify.py: rank r: error: …`` only for what rank 0 does not already say (errors every
    rank shares, e.g. a usage error or another run in the output, are printed once).
    """
    from jsonargparse import ArgumentError

    from robustattr.checkpoint import CheckpointError
    from robustattr.data import DatasetNotFoundError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ROBUSTATTR_DEBUG", "").lower() not in ("", "0", "false", "no")
    rank = launcher_rank()
    try:
        subs = subcommands() if subs is None else subs
        cli(args, subs)
    except (ValueError, FileNotFoundError, CheckpointError, DatasetNotFoundError, ArgumentError) as err:
        if debug:
            raise
        if rank != 0 and isinstance(err, (SharedError, ArgumentError)):
            raise SystemExit(2) from None
        where = "" if rank == 0 else f" rank {rank}:"
        print(f"{_prog()}:{where} error: {_one_line(err, list(subs or ()))}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if rank == 0:
            print(f"{_prog()}: interrupted; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
