"""``study.py`` / ``robustattr-study``: train every objective, evaluate every checkpoint the same way, one table.

Synopsis::

    study.py run configs/study/digits.yaml [--output DIR] [--cell NAME ...] [--dry-run]
                 [--launcher slurm [--submit]] [--no-report]
    study.py report configs/study/digits.yaml [--output DIR]

A study YAML names a grid of cells (objectives × setups), the training configurations of each
(the same LightningCLI files as ``train.py``), the training seed and the evaluation suite
(evaluators of :mod:`robustattr.evaluation` with their init arguments). Per cell ``run``:

1. computes the cell's identity, the sha256 of ``train.py fit --print_config`` of the cell's
   configs, overrides and seed (comments dropped). ``<output>/cells/<cell>/cell.json`` keeps it;
   a cell folder holding another identity is refused with a one-line error;
2. trains (unless ``cell.json`` says trained with this identity and the checkpoint exists) in a
   subprocess running ``train.py fit`` (:func:`robustattr.apps.train.train_main`, DDP when the
   trainer config says so) with a :class:`StudyRecorder` callback (step times, per-epoch
   metrics → ``train/train_metrics.json``), a CSV logger and the final checkpoint in
   ``train/checkpoints/final.ckpt``; a killed training restarts from scratch on the next run;
3. evaluates the checkpoint with every evaluator through :func:`robustattr.apps.certify.run`
   (the run store: per-sample rows, resumable, identity-checked) on the same fixed seeded
   subset of the evaluation split, into ``eval/<evaluator key>/``.

Then ``study.json`` (every summary number, parameters, versions, timings), ``study.md`` (tables,
best value per column in bold), plots and a W&B group (a run per cell and a summary table;
offline unless ``WANDB_MODE`` says otherwise) are written from the finished cells. ``report``
rebuilds them without training or evaluating. ``--dry-run`` prints the plan and an estimated
time per cell from a 2-step training measurement plus one evaluated sample per evaluator.
``--launcher slurm`` writes ``<output>/slurm/array.sbatch`` (one array task per cell, each
``study.py run <yaml> --cell <name> --no-report``) and ``merge.sbatch`` (``study.py report``);
``--submit`` submits both (the merge after the array). Errors are one line
``study.py: error: …`` with exit status 2 (``--debug`` shows the traceback).

See docs/guides/study.md for the YAML options and the committed digits results.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

__all__ = [
    "Cell",
    "CellBusyError",
    "Column",
    "Study",
    "StudyRecorder",
    "build_evaluator",
    "cell_identity",
    "collect",
    "load_study",
    "main",
    "markdown_tables",
    "run_cell",
    "table_columns",
    "write_slurm",
]

CELL_JSON = "cell.json"
CHECKPOINT = Path("train") / "checkpoints" / "final.ckpt"
TRAIN_METRICS = Path("train") / "train_metrics.json"
#: evaluator options handled by the study rather than passed to the evaluator
EVAL_OPTIONS = ("num_samples", "batch_size")
#: ``certify.run`` subcommand names of registered evaluators whose reports have plots
REPORT_NAMES = {"smoothing": "smoothing", "bounds": "bounds", "attribution_attack": "attack"}


# --- the study configuration ----------------------------------------------------------------------


@dataclass
class Cell:
    """One training run of the grid: an objective in a setup.

    Attributes:
        name: ``<objective>`` (one setup) or ``<objective>-<setup>``.
        objective, setup: the grid coordinates.
        configs: LightningCLI config files, composed in order (absolute paths).
        overrides: extra ``train.py fit`` arguments (after the configs).
    """

    name: str
    objective: str
    setup: str
    configs: list[str]
    overrides: list[str]


@dataclass
class Study:
    """A parsed study YAML (see docs/guides/study.md for every key)."""

    path: Path
    name: str
    output: Path
    seed: int
    threads: int | None
    cells: list[Cell]
    evaluation: dict[str, Any]
    reference: str
    wandb: dict[str, Any]
    slurm: dict[str, Any]
    table: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ValueError(f"{what} must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def _resolve(base: Path, files: Sequence[str], what: str) -> list[str]:
    out = []
    for f in files:
        p = (base / f).resolve() if not Path(f).is_absolute() else Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"{what}: config file {f} not found (relative to {base})")
        out.append(str(p))
    return out


def load_study(path: str | Path, output: str | Path | None = None) -> Study:
    """Read a study YAML; config paths are relative to the YAML's folder, ``output`` to the working directory.

    Raises:
        ValueError: unknown keys, a missing ``objectives`` mapping or malformed entries.
        FileNotFoundError: the YAML or a config file it names does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {"name", "output", "seed", "threads", "configs", "objectives", "setups", "train", "evaluation",
             "reference", "wandb", "slurm", "table"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} (known: {sorted(known)})")
    objectives = raw.get("objectives")
    if not isinstance(objectives, dict) or not objectives:
        raise ValueError(f"{path}: objectives must be a non-empty mapping name -> {{configs: [...], overrides: [...]}}")
    setups = raw.get("setups") or {"default": {}}
    base = path.parent.resolve()
    common = _resolve(base, _str_list(raw.get("configs"), "configs"), "configs")
    train = raw.get("train") or {}
    common_over = _str_list(train.get("overrides"), "train.overrides")
    cells = []
    for sname, sspec in setups.items():
        sspec = sspec or {}
        for oname, ospec in objectives.items():
            ospec = ospec or {}
            for key, spec in ((oname, ospec), (sname, sspec)):
                bad = sorted(set(spec) - {"configs", "overrides"})
                if bad:
                    raise ValueError(f"{path}: {key}: unknown keys {bad} (known: configs, overrides)")
            name = oname if len(setups) == 1 else f"{oname}-{sname}"
            configs = common + _resolve(base, _str_list(sspec.get("configs"), f"setups.{sname}.configs"), sname)
            configs += _resolve(base, _str_list(ospec.get("configs"), f"objectives.{oname}.configs"), oname)
            overrides = common_over + _str_list(sspec.get("overrides"), sname) + _str_list(ospec.get("overrides"), oname)
            cells.append(Cell(name, oname, sname, configs, overrides))
    evaluation = dict(raw.get("evaluation") or {})
    if not isinstance(evaluation.get("evaluators", {}), dict):
        raise ValueError(f"{path}: evaluation.evaluators must be a mapping name[@tag] -> init args")
    reference = str(raw.get("reference", "standard"))
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{path}: threads must be a positive integer or null, got {threads!r}")
    out = Path(output) if output is not None else Path(raw.get("output") or Path("outputs") / "study" / str(raw.get("name", path.stem)))
    return Study(path=path.resolve(), name=str(raw.get("name", path.stem)), output=out, seed=int(raw.get("seed", 0)),
                 threads=threads, cells=cells, evaluation=evaluation, reference=reference,
                 wandb=dict(raw.get("wandb") or {}), slurm=dict(raw.get("slurm") or {}),
                 table=dict(raw.get("table") or {}), raw=raw)


# --- the training recorder (runs inside the train.py subprocess) ------------------------------------


class StudyRecorder(Callback):
    """Records training step wall times and per-epoch metrics into a JSON file (rank zero).

    ``step_times``: seconds from ``on_train_batch_start`` to ``on_train_batch_end`` of every
    optimisation step (forward, the objective's inner maximisations, backward, optimizer step);
    ``epochs``: per epoch the logged scalars (``train/loss``, ``val/acc``, …); plus
    ``num_training_batches`` and ``max_epochs`` (for the dry run's estimate). Written after every
    epoch and at the end of ``fit``.

    Args:
        path: the JSON file to write.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.step_times: list[float] = []
        self.epochs: list[dict[str, float]] = []
        self._t0 = 0.0
        self._fit_start = 0.0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:  # noqa: D102
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:  # noqa: D102
        self.step_times.append(time.perf_counter() - self._t0)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        row: dict[str, float] = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        for key, value in trainer.callback_metrics.items():
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                row[key] = float(value.detach().cpu()) if hasattr(value, "detach") else float(value)
        self.epochs.append(row)
        self._write(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._write(trainer)

    def _write(self, trainer: Any) -> None:
        if not trainer.is_global_zero:
            return
        from robustattr.apps.store import atomic_write

        times = self.step_times[1:] if len(self.step_times) > 1 else self.step_times  # the first step warms up
        data = {
            "step_times": self.step_times,
            "step_time_mean": sum(times) / len(times) if times else None,
            "epochs": self.epochs,
            "num_training_batches": trainer.num_training_batches if math.isfinite(trainer.num_training_batches) else None,
            "max_epochs": trainer.max_epochs,
            "world_size": trainer.world_size,
            "fit_seconds": time.perf_counter() - self._fit_start,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=1))


class CellBusyError(ValueError):
    """A cell folder is locked by another process running that cell."""


# --- identity, training ---------------------------------------------------------------------------


def _fit_args(cell: Cell, seed: int) -> list[str]:
    args = ["fit"]
    for c in cell.configs:
        args += ["--config", c]
    return [*args, "--seed_everything", str(seed), *cell.overrides]


def cell_identity(cell: Cell, seed: int) -> dict[str, Any]:
    """``{"sha256", "config"}``: the resolved ``train.py fit`` config of the cell (its configs, overrides, seed).

    The config is what ``train.py fit … --print_config`` prints (comment lines dropped), so two
    cells with the same resolved training configuration and seed share an identity whatever
    files it came from.
    """
    from robustattr.apps.train import build_cli

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LightningCLI warns that args are given while sys.argv has the study's
            build_cli([*_fit_args(cell, seed), "--print_config"])
    except SystemExit as err:
        if err.code not in (0, None):
            raise ValueError(f"cell {cell.name}: train.py rejected its configuration (run it with train.py to see why)") from None
    text = "\n".join(ln for ln in buf.getvalue().splitlines() if not ln.lstrip().startswith("#")) + "\n"
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "config": text}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    from robustattr.apps.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, default=str, allow_nan=True))


def _check_cell(folder: Path, cell: Cell, identity: str) -> dict[str, Any]:
    """The cell's ``cell.json`` (new if absent); refuses a folder that holds another identity."""
    state = _read_json(folder / CELL_JSON)
    if state is not None and state.get("identity") != identity:
        raise ValueError(
            f"cell {cell.name}: {folder} holds a cell with another configuration (identity {str(state.get('identity'))[:12]} "
            f"!= {identity[:12]}); use another --output or delete that folder"
        )
    return state or {"name": cell.name, "objective": cell.objective, "setup": cell.setup, "identity": identity,
                     "status": "new", "evaluations": {}}


def _train_command(cell: Cell, seed: int, folder: Path, extra: Sequence[str] = ()) -> list[str]:
    train_dir = folder / "train"
    recorder = {"class_path": "robustattr.apps.study.StudyRecorder", "init_args": {"path": str(folder / TRAIN_METRICS)}}
    ckpt = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(train_dir / "checkpoints"), "filename": "final", "save_top_k": 1}}
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(train_dir), "name": "csv", "version": 0}}
    return [
        sys.executable, "-m", "robustattr.apps.study", "_train", *_fit_args(cell, seed),
        "--trainer.default_root_dir", str(train_dir), "--trainer.logger", json.dumps(logger),
        "--trainer.callbacks+", json.dumps(recorder), "--trainer.callbacks+", json.dumps(ckpt),
        "--trainer.enable_progress_bar", "false", *extra,
    ]


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _train(cell: Cell, study: Study, folder: Path, extra: Sequence[str] = (), log_name: str = "train.log") -> float:
    """Run the training subprocess; returns its wall time. Raises ``RuntimeError`` if it fails."""
    cmd = _train_command(cell, study.seed, folder, extra)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / log_name
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(study.threads), check=False)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"cell {cell.name}: training failed (exit {proc.returncode}; {log}): {tail[0]}")
    return time.perf_counter() - t0


# --- evaluation -----------------------------------------------------------------------------------


def build_evaluator(key: str, spec: Mapping[str, Any] | None) -> Any:
    """An evaluator from ``name[@tag]`` and its init arguments (jsonargparse: nested dicts, ``class_path`` for unions).

    Raises:
        ValueError: an unknown evaluator name or arguments its class rejects.
    """
    from jsonargparse import ArgumentParser

    from robustattr.registry import available, get

    name = key.split("@", 1)[0]
    if name not in available("evaluator"):
        raise ValueError(f"evaluation.evaluators: unknown evaluator {name!r} in {key!r} (available: {available('evaluator')})")
    cls = get("evaluator", name)
    args = {k: v for k, v in (spec or {}).items() if k not in EVAL_OPTIONS}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "evaluator", fail_untyped=False, sub_configs=True)
    try:
        cfg = parser.parse_object({"evaluator": args})
        return parser.instantiate_classes(cfg).evaluator
    except Exception as err:  # jsonargparse wraps the class's ValueError
        msg = " ".join(str(err).split())
        raise ValueError(f"evaluation.evaluators.{key}: {msg[:400]}") from err


def _folder_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def _evaluate(cell: Cell, study: Study, folder: Path, state: dict[str, Any], quiet: bool) -> None:
    from robustattr.apps.certify import run, run_identity
    from robustattr.apps.store import sha256_file

    ev_cfg = study.evaluation
    ckpt = folder / CHECKPOINT
    sha = sha256_file(ckpt)
    for key, spec in (ev_cfg.get("evaluators") or {}).items():
        spec = dict(spec or {})
        evaluator = build_evaluator(key, spec)
        sub = REPORT_NAMES.get(key.split("@", 1)[0], _folder_name(key))
        options = {"split": ev_cfg.get("split", "test"), "num_samples": spec.get("num_samples", ev_cfg.get("num_samples", 64)),
                   "subset_seed": ev_cfg.get("subset_seed", 0), "batch_size": spec.get("batch_size", ev_cfg.get("batch_size", 16))}
        ident = hashlib.sha256(json.dumps([run_identity(sub, sha, evaluator, split=options["split"]), options],
                                          sort_keys=True, default=str).encode()).hexdigest()
        done = state["evaluations"].get(key)
        if done and done.get("identity") == ident:
            continue
        _progress(f"  {cell.name}: {key} on {options['num_samples']} {options['split']} samples", quiet)
        t0 = time.perf_counter()
        result = run(sub, ckpt, folder / "eval" / _folder_name(key), evaluator, split=options["split"],
                     num_samples=options["num_samples"], subset_seed=options["subset_seed"],
                     batch_size=options["batch_size"], device=ev_cfg.get("device", "cpu"), progress=False, quiet=True)
        state["evaluations"][key] = {"identity": ident, "evaluator": key.split("@", 1)[0], "params": evaluator.params(),
                                     "options": options, "summary": result["summary"],
                                     "seconds": time.perf_counter() - t0, "output": str(result["output"])}
        _write_json(folder / CELL_JSON, state)


def _progress(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, flush=True)


def run_cell(cell: Cell, study: Study, identity: dict[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (unless already trained with this identity) and evaluate one cell; returns its ``cell.json``.

    Raises:
        ValueError: the cell folder holds another identity, or a bad evaluator spec.
        RuntimeError: the training subprocess failed.
    """
    identity = identity or cell_identity(cell, study.seed)
    folder = study.output / "cells" / cell.name
    _check_cell(folder, cell, identity["sha256"])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CellBusyError(f"cell {cell.name}: {folder} is being run by another process (wait for it or stop it)") from None
        return _run_locked(cell, study, identity, folder, quiet)


def _run_locked(cell: Cell, study: Study, identity: dict[str, Any], folder: Path, quiet: bool) -> dict[str, Any]:
    state = _check_cell(folder, cell, identity["sha256"])
    (folder / "config.yaml").write_text(identity["config"])
    if state.get("status") in ("trained", "done") and (folder / CHECKPOINT).is_file():
        _progress(f"[{cell.name}] trained already (identity {identity['sha256'][:12]}): skipping training", quiet)
    else:
        for sub in ("train", "eval"):  # a killed training restarts from scratch; evaluations of another checkpoint go
            shutil.rmtree(folder / sub, ignore_errors=True)
        state.update(status="training", seed=study.seed, configs=cell.configs, overrides=cell.overrides, evaluations={})
        _write_json(folder / CELL_JSON, state)
        _progress(f"[{cell.name}] training ({', '.join(Path(c).name for c in cell.configs)})", quiet)
        wall = _train(cell, study, folder)
        metrics = _read_json(folder / TRAIN_METRICS) or {}
        state.update(status="trained", train_seconds=wall, step_time=metrics.get("step_time_mean"),
                     steps=len(metrics.get("step_times", [])), world_size=metrics.get("world_size"))
        _write_json(folder / CELL_JSON, state)
        _progress(f"[{cell.name}] trained in {wall:.0f} s ({state['steps']} steps, {state['step_time'] or float('nan'):.3f} s/step)", quiet)
    t0 = time.perf_counter()
    _evaluate(cell, study, folder, state, quiet)
    state["status"] = "done"
    state["eval_seconds"] = sum(e.get("seconds", 0.0) for e in state["evaluations"].values())
    _write_json(folder / CELL_JSON, state)
    _progress(f"[{cell.name}] evaluated ({time.perf_counter() - t0:.0f} s this run)", quiet)
    return state


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column: where its value is in a cell's evaluation summaries and which way is better.

    Attributes:
        table: the study.md table it belongs to.
        label: header text.
        evaluator: key of the evaluator in ``evaluation.evaluators`` (``None``: a cell value).
        key: summary key (or cell value name).
        sense: ``"max"``, ``"min"`` or ``""`` (not ranked).
        transform: ``"1-"`` reports ``1 − value`` (a cosine distance from a cosine).
    """

    table: str
    label: str
    evaluator: str | None
    key: str
    sense: str
    transform: str = ""


def _g(v: float) -> str:
    return f"{v:g}"


def table_columns(study: Study) -> list[Column]:
    """The table's columns, derived from the evaluators in the study (every summary number is in study.json anyway)."""
    cols: list[Column] = []
    evs = study.evaluation.get("evaluators") or {}
    for key, spec in evs.items():
        name, tag = key.split("@", 1)[0], (f" ({key.split('@', 1)[1]})" if "@" in key else "")
        spec = spec or {}
        if name == "accuracy":
            cols.append(Column("robustness", "clean acc.", key, "accuracy", "max"))
        elif name == "pgd_accuracy":
            eps = (spec.get("attack") or {}).get("init_args", spec.get("attack") or {}).get("eps")
            cols.append(Column("robustness", f"PGD acc.{'' if eps is None else f' ε={_g(eps)}'}{tag}", key, "robust_accuracy", "max"))
        elif name == "attribution_attack":
            metrics = spec.get("metrics", ["topk", "lens_topk", "spearman", "kendall", "cosine"])
            for attack, aspec in (spec.get("attacks") or {"topk": {}}).items():
                cls = str((aspec or {}).get("class_path", ""))
                eps = ((aspec or {}).get("init_args") or {}).get("eps")
                where = f"{attack}, {key.split('@', 1)[1]}" if "@" in key else f"{attack}{'' if eps is None else f', ε={_g(eps)}'}"
                if "Manipulate" in cls:
                    cols.append(Column("robustness", f"manip. cos dist. ({where})", key, f"{attack}/cosine", "min", "1-"))
                    continue
                labels = {"topk": "top-k ∩", "lens_topk": "LENS top-k", "kendall": "Kendall", "spearman": "Spearman", "cosine": "cos"}
                for m in metrics:
                    if isinstance(m, str) and m in labels:
                        cols.append(Column("robustness", f"{labels[m]} ({where})", key, f"{attack}/{m}", "max"))
                cols.append(Column("robustness", f"attacked ({where})", key, f"{attack}/attacked_frac", ""))
        elif name == "smoothing":
            ep = [float(e) for e in spec.get("eps_grid", [])]
            taus = [float(t) for t in spec.get("taus", [])]
            attr = spec.get("attribution") or "Saliency"
            attr_name = str(attr.get("class_path", "?") if isinstance(attr, dict) else attr).rsplit(".", 1)[-1]
            where = f"{attr_name}, r={_g(float(spec.get('radius', 0.25)))}"
            cols.append(Column("certificates", f"med. ‖ĥ‖ ({where})", key, "h_norm_median", "max"))
            for e in ep[-2:]:
                cols.append(Column("certificates", f"cert. cos ε={_g(e)} ({where})", key, f"cos_median@eps={_g(e)}", "max"))
            if taus:
                t = max(taus)
                cols.append(Column("certificates", f"med. ε_max τ={_g(t)} ({where})", key, f"eps_max_median@tau={_g(t)}", "max"))
        elif name == "bounds":
            cols.append(Column("certificates", f"med. ξ_max{tag}", key, "xi_max_median", ""))
            cols.append(Column("certificates", f"med. T_e{tag}", key, "T_e_median", "min"))
            cols.append(Column("certificates", f"med. T'_e{tag}", key, "T_e_prime_median", "min"))
            if int(spec.get("attack_repeats", 0)) > 0:
                cols.append(Column("certificates", f"outside T_e{tag}", key, "frac_outside_T_e", ""))
        elif name == "targets":
            from robustattr.evaluation.targets import TARGET_SENSE, TARGETS

            labels = {"pgd_robust": "PGD-AT: robust acc.", "trades_kl": "TRADES: KL", "ig_norm": "IG-NORM: ‖IGᴸ‖₁",
                      "art_triplet": "ART: triplet", "igr_ig_cos": "IGR: IG cos", "ssr_lambda_max": "SSR: λ_max"}
            for t in spec.get("targets", TARGETS):
                cols.append(Column("targets", labels[t], key, t, TARGET_SENSE[t]))
    cols.append(Column("cost", "step time (s)", None, "step_time", ""))
    cols.append(Column("cost", f"cost ÷ {study.reference}", None, "cost", ""))
    cols.append(Column("cost", "train wall (s)", None, "train_seconds", ""))
    cols.append(Column("cost", "eval wall (s)", None, "eval_seconds", ""))
    cols.append(Column("cost", "val acc. (train)", None, "val_acc", "max"))
    return cols


def _value(col: Column, cell: Mapping[str, Any]) -> float | None:
    if col.evaluator is None:
        v = cell.get("values", {}).get(col.key)
    else:
        v = (cell.get("evaluations", {}).get(col.evaluator) or {}).get("summary", {}).get(col.key)
    if v is None:
        return None
    v = float(v)
    return 1.0 - v if col.transform == "1-" and math.isfinite(v) else v


def collect(study: Study) -> dict[str, Any]:
    """Every finished cell's numbers, parameters and timings (the content of ``study.json``)."""
    from robustattr.apps.reports import versions

    cells: dict[str, Any] = {}
    for cell in study.cells:
        folder = study.output / "cells" / cell.name
        state = _read_json(folder / CELL_JSON)
        if not state or state.get("status") not in ("trained", "done") or not state.get("evaluations"):
            continue  # cells without a finished training and at least one evaluation are listed as missing
        metrics = _read_json(folder / TRAIN_METRICS) or {}
        epochs = metrics.get("epochs", [])
        state["values"] = {"step_time": state.get("step_time"), "train_seconds": state.get("train_seconds"),
                           "eval_seconds": state.get("eval_seconds"),
                           "val_acc": epochs[-1].get("val/acc") if epochs else None}
        state["epochs"] = epochs
        cells[cell.name] = state
    for state in cells.values():
        ref = cells.get(state["name"].replace(state["objective"], study.reference, 1))
        st, rt = state["values"]["step_time"], (ref or {}).get("values", {}).get("step_time")
        state["values"]["cost"] = st / rt if st and rt else None
    keys = list(study.evaluation.get("evaluators") or {})
    incomplete = {n: [k for k in keys if k not in s["evaluations"]] for n, s in cells.items()}
    return {"name": study.name, "study_file": str(study.path), "seed": study.seed, "output": str(study.output),
            "incomplete": {n: v for n, v in incomplete.items() if v},
            "versions": versions(), "evaluation": study.evaluation, "reference": study.reference,
            "cells": cells, "missing": [c.name for c in study.cells if c.name not in cells],
            "columns": [c.__dict__ for c in table_columns(study)]}


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if math.isnan(v):
        return "n.c."
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def markdown_tables(study: Study, data: Mapping[str, Any]) -> str:
    """study.md's tables: one row per cell, best value per ranked column in bold (NaN = not certified)."""
    cols = table_columns(study)
    cells = data["cells"]
    titles = {"robustness": "Accuracy and attribution robustness under attack",
              "certificates": "Certificates (uniform smoothing) and worst-case bounds",
              "targets": "Each objective's own target (same settings for every model)", "cost": "Cost and training"}
    out = [f"# Study {data['name']}", ""]
    for table in ("robustness", "certificates", "targets", "cost"):
        tc = [c for c in cols if c.table == table]
        if not tc or not cells:
            continue
        best: dict[str, float] = {}
        for c in tc:
            vals = [v for v in (_value(c, s) for s in cells.values()) if v is not None and math.isfinite(v)]
            if c.sense and vals:
                best[c.label] = max(vals) if c.sense == "max" else min(vals)
        out += [f"## {titles[table]}", "", "| cell | " + " | ".join(c.label + {"max": " ↑", "min": " ↓"}.get(c.sense, "") for c in tc) + " |",
                "|---|" + "---|" * len(tc)]
        for name, s in cells.items():
            row = []
            for c in tc:
                v = _value(c, s)
                text = _fmt(v)
                if v is not None and c.label in best and math.isfinite(v) and _fmt(v) == _fmt(best[c.label]):
                    text = f"**{text}**"
                row.append(text)
            out.append(f"| {name} | " + " | ".join(row) + " |")
        out.append("")
    if data.get("missing"):
        out += [f"Not finished: {', '.join(data['missing'])}.", ""]
    for name, keys in (data.get("incomplete") or {}).items():
        out += [f"{name}: evaluations not finished: {', '.join(keys)} (–).", ""]
    note = study.table.get("note")
    if note:
        out += [str(note).strip(), ""]
    v = data["versions"]
    out += ["↑/↓: higher/lower is better (bold: best); n.c.: median sample not certified; –: not measured.",
            f"Versions: {', '.join(f'{k} {x}' for k, x in v.items())}.", ""]
    return "\n".join(out)


# --- plots and W&B --------------------------------------------------------------------------------


def _plots(study: Study, data: Mapping[str, Any]) -> list[Path]:
    from matplotlib.figure import Figure

    from robustattr.apps.store import atomic_write

    out_dir = study.output / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    cells = data["cells"]

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        files.append(atomic_write(out_dir / name, buf.getvalue()))

    smooth = [k for k in (study.evaluation.get("evaluators") or {}) if k.split("@", 1)[0] == "smoothing"]
    if smooth and cells:
        fig = Figure(figsize=(4.2 * len(smooth), 3.4))
        for i, key in enumerate(smooth):
            ax = fig.add_subplot(1, len(smooth), i + 1)
            for name, s in cells.items():
                summ = (s["evaluations"].get(key) or {}).get("summary", {})
                pts = sorted((float(k.split("=", 1)[1]), v) for k, v in summ.items() if k.startswith("cos_median@eps="))
                if pts:
                    ax.plot([p[0] for p in pts], [0.0 if v is None or math.isnan(v) else v for _, v in pts], marker="o", ms=3, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("ε (ℓ2)")
            ax.set_ylabel("median certified cosine (0: not certified)")
            ax.set_title(key, fontsize=9)
        fig.axes[0].legend(fontsize=7)
        save(fig, "certified_cosine_vs_eps.png")
    attacks = [c for c in table_columns(study) if c.key.endswith("/topk")]
    if attacks and cells:
        fig = Figure(figsize=(4.2 * len(attacks), 3.4))
        for i, col in enumerate(attacks):
            ax = fig.add_subplot(1, len(attacks), i + 1)
            for name, s in cells.items():
                acc = (s["evaluations"].get(next(iter(k for k in s["evaluations"] if k.split("@")[0] == "accuracy"), ""), {}) or {}).get("summary", {}).get("accuracy")
                v = _value(col, s)
                if acc is not None and v is not None:
                    ax.scatter([acc], [v])
                    ax.annotate(name, (acc, v), fontsize=7)
            ax.set_xlabel("clean accuracy")
            ax.set_ylabel(col.label)
        save(fig, "topk_vs_accuracy.png")
    if cells:
        fig = Figure(figsize=(9, 3.4))
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for name, s in cells.items():
            ep = s.get("epochs", [])
            xs = [e["epoch"] + 1 for e in ep]
            ax1.plot(xs, [e.get("train/loss_epoch", e.get("train/loss", math.nan)) for e in ep], marker="o", ms=3, label=name)
            ax2.plot(xs, [e.get("val/acc", math.nan) for e in ep], marker="o", ms=3, label=name)
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("training objective (epoch mean)")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("validation accuracy")
        ax2.legend(fontsize=7)
        save(fig, "training_curves.png")
    return files


def _wandb(study: Study, data: Mapping[str, Any], quiet: bool) -> str | None:
    if not study.wandb.get("enabled", True) or not data["cells"]:
        return None
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    wdir = study.output / "wandb"
    wdir.mkdir(parents=True, exist_ok=True)
    project = study.wandb.get("project", "robustattr-study")
    cols = table_columns(study)
    for name, s in data["cells"].items():
        run = wandb.init(project=project, group=study.name, name=name, job_type="cell", dir=str(wdir), reinit=True,
                         config={"identity": s["identity"], "objective": s["objective"], "setup": s["setup"],
                                 "seed": s.get("seed"), "configs": s.get("configs"), "overrides": s.get("overrides")})
        for e in s.get("epochs", []):
            run.log({k: v for k, v in e.items() if k not in ("epoch", "step")}, step=int(e["step"]))
        flat = {f"{k}/{m}": v for k, ev in s["evaluations"].items() for m, v in ev["summary"].items()}
        run.summary.update({**flat, **{k: v for k, v in s["values"].items() if v is not None}})
        run.finish()
    run = wandb.init(project=project, group=study.name, name=f"{study.name}-summary", job_type="summary", dir=str(wdir), reinit=True)
    table = wandb.Table(columns=["cell"] + [c.label for c in cols])
    for name, s in data["cells"].items():
        table.add_data(name, *[_value(c, s) for c in cols])
    run.log({"study_table": table})
    run.finish()
    return str(wdir)


def report(study: Study, quiet: bool = False) -> dict[str, Any]:
    """Write study.json, study.md, plots and the W&B group from the finished cells; print the end summary."""
    data = collect(study)
    md = markdown_tables(study, data)
    _write_json(study.output / "study.json", data)
    from robustattr.apps.store import atomic_write

    atomic_write(study.output / "study.md", md)
    files = _plots(study, data)
    wdir = _wandb(study, data, quiet)
    _progress(md, quiet)
    _progress(f"study results in {study.output}: study.json, study.md, {', '.join(f.name for f in files)}"
              + (f"; W&B group {study.name!r} in {wdir}" if wdir else ""), quiet)
    return data


# --- dry run and SLURM ----------------------------------------------------------------------------


def _eval_estimate(study: Study, checkpoint: Path, quiet: bool) -> float:
    """Seconds of the whole evaluation suite for one cell, from each evaluator on 2 samples (model loaded once)."""
    import torch

    from robustattr.checkpoint import load_classifier

    ev_cfg = study.evaluation
    module, dm = load_classifier(checkpoint, None, map_location=torch.device("cpu"))
    dataset = dm.split(ev_cfg.get("split", "test"))
    x = torch.stack([dataset[i][0] for i in (0, 1)])
    y = torch.tensor([int(dataset[i][1]) for i in (0, 1)])
    total = 0.0
    for key, spec in (ev_cfg.get("evaluators") or {}).items():
        spec = dict(spec or {})
        ev = build_evaluator(key, spec)
        n = spec.get("num_samples", ev_cfg.get("num_samples", 64))
        t0 = time.perf_counter()
        ev.evaluate(module.model, x, y, torch.tensor([0, 1]))
        per = (time.perf_counter() - t0) / 2
        total += per * n
        _progress(f"  evaluator {key}: {per:.2f} s/sample × {n} samples = {per * n / 60:.1f} min", quiet)
    return total


def dry_run(study: Study, cells: Sequence[Cell], quiet: bool = False) -> list[dict[str, Any]]:
    """Print the plan and an estimated time per cell: 2 training steps, then one sample per evaluator (first cell).

    The training estimate is the mean of the 2nd step's time × batches per epoch × epochs; the
    evaluation estimate is the per-sample time of each evaluator on the first cell's 2-step
    checkpoint × its sample count (the same for every cell of a setup). Nothing is written
    outside ``<output>/dryrun``.
    """
    root = study.output / "dryrun"
    shutil.rmtree(root, ignore_errors=True)
    plan: list[dict[str, Any]] = []
    eval_est: dict[str, float] = {}
    for cell in cells:
        identity = cell_identity(cell, study.seed)
        folder = root / cell.name
        extra = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
        t0 = time.perf_counter()
        _train(cell, study, folder, extra)
        m = _read_json(folder / TRAIN_METRICS) or {}
        st = m.get("step_times") or [math.nan]
        per_step = st[-1]
        train_est = per_step * (m.get("num_training_batches") or 0) * (m.get("max_epochs") or 1)
        if cell.setup not in eval_est:
            eval_est[cell.setup] = _eval_estimate(study, folder / CHECKPOINT, quiet)
        row = {"cell": cell.name, "identity": identity["sha256"][:12], "configs": [Path(c).name for c in cell.configs],
               "overrides": cell.overrides, "step_seconds": per_step, "steps": (m.get("num_training_batches") or 0) * (m.get("max_epochs") or 1),
               "train_estimate_s": train_est, "eval_estimate_s": eval_est[cell.setup], "measure_s": time.perf_counter() - t0}
        plan.append(row)
        _progress(f"{cell.name:>14}: {row['steps']} steps × {per_step:.3f} s ≈ train {train_est / 60:.1f} min + eval "
                  f"{row['eval_estimate_s'] / 60:.1f} min  [{', '.join(row['configs'])}{' ' + ' '.join(cell.overrides) if cell.overrides else ''}]", quiet)
    total = sum(r["train_estimate_s"] + r["eval_estimate_s"] for r in plan)
    _progress(f"estimated total: {total / 60:.1f} min for {len(plan)} cells (from 2 steps on this machine, its current load included)", quiet)
    return plan


def write_slurm(study: Study, yaml_path: str | Path, cells: Sequence[Cell], submit: bool = False) -> dict[str, Any]:
    """Write ``<output>/slurm/array.sbatch`` (one task per cell) and ``merge.sbatch``; optionally submit them.

    ``slurm.options`` in the study YAML become ``#SBATCH --key=value`` lines of every task (e.g.
    ``gres: gpu:4``, ``ntasks-per-node: 4``, ``time: "04:00:00"``): each task runs
    ``srun study.py run <yaml> --cell <name> --no-report``, a normal (DDP when the trainer config
    says so) job. ``merge.sbatch`` runs ``study.py report <yaml>``; with ``submit`` it waits for
    the array (``--dependency=afterok``).
    """
    sdir = study.output / "slurm"
    sdir.mkdir(parents=True, exist_ok=True)
    opts = dict(study.slurm.get("options") or {})
    py = study.slurm.get("python", sys.executable)
    yaml_abs = Path(yaml_path).resolve()
    out_arg = f" --output {shlex.quote(str(study.output.resolve()))}"
    lines = ["#!/bin/bash", f"#SBATCH --job-name=study-{study.name}", f"#SBATCH --array=0-{len(cells) - 1}",
             f"#SBATCH --output={sdir.resolve()}/%x-%A_%a.out"]
    lines += [f"#SBATCH --{k}={v}" for k, v in opts.items()]
    lines += ["set -euo pipefail", f"cd {shlex.quote(os.getcwd())}",
              "CELLS=(" + " ".join(shlex.quote(c.name) for c in cells) + ")",
              f"srun {shlex.quote(py)} -m robustattr.apps.study run {shlex.quote(str(yaml_abs))}{out_arg} "
              "--cell \"${CELLS[$SLURM_ARRAY_TASK_ID]}\" --no-report", ""]
    array = sdir / "array.sbatch"
    array.write_text("\n".join(lines))
    merge = sdir / "merge.sbatch"
    merge.write_text("\n".join(["#!/bin/bash", f"#SBATCH --job-name=study-{study.name}-merge",
                                f"#SBATCH --output={sdir.resolve()}/%x-%j.out", "#SBATCH --ntasks=1", "set -euo pipefail",
                                f"cd {shlex.quote(os.getcwd())}",
                                f"{shlex.quote(py)} -m robustattr.apps.study report {shlex.quote(str(yaml_abs))}{out_arg}", ""]))
    result: dict[str, Any] = {"array": array, "merge": merge}
    if submit:
        if shutil.which("sbatch") is None:
            raise ValueError("--submit: sbatch is not on PATH (the scripts are written; submit them on the cluster)")
        job = subprocess.run(["sbatch", "--parsable", str(array)], check=True, capture_output=True, text=True).stdout.strip().split(";")[0]
        mjob = subprocess.run(["sbatch", "--parsable", f"--dependency=afterok:{job}", str(merge)],
                              check=True, capture_output=True, text=True).stdout.strip()
        result.update(job=job, merge_job=mjob)
    return result


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """``run`` and ``report`` subcommands."""
    p = argparse.ArgumentParser(prog="study.py", description="Train every objective of a study YAML, evaluate every checkpoint the same way, one table.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train missing cells, evaluate missing evaluations, write the table")
    r.add_argument("study", help="study YAML (e.g. configs/study/digits.yaml)")
    r.add_argument("--output", default=None, help="study folder (default: the YAML's output)")
    r.add_argument("--cell", action="append", default=None, help="only this cell (repeatable); the SLURM tasks use it")
    r.add_argument("--dry-run", action="store_true", help="print the plan and the estimated time per cell (2 training steps)")
    r.add_argument("--launcher", choices=["local", "slurm"], default="local", help="slurm: write the array job instead of running")
    r.add_argument("--submit", action="store_true", help="with --launcher slurm: submit the array and the merge job")
    r.add_argument("--no-report", action="store_true", help="do not write study.json/md/plots (the SLURM tasks)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--debug", action="store_true", help="show tracebacks")
    q = sub.add_parser("report", help="rebuild study.json, study.md, plots and W&B from the finished cells")
    q.add_argument("study")
    q.add_argument("--output", default=None)
    q.add_argument("--quiet", action="store_true")
    q.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _select(study: Study, names: Sequence[str] | None) -> list[Cell]:
    if not names:
        return list(study.cells)
    by = {c.name: c for c in study.cells}
    bad = [n for n in names if n not in by]
    if bad:
        raise ValueError(f"--cell: unknown cell(s) {bad} (cells: {list(by)})")
    return [by[n] for n in names]


def cli(argv: Sequence[str]) -> Any:
    """Parse ``argv`` and run the command; errors are raised (see :func:`main`)."""
    args = build_parser().parse_args(list(argv))
    study = load_study(args.study, args.output)
    quiet = args.quiet
    if args.command == "report":
        return report(study, quiet)
    cells = _select(study, args.cell)
    if args.launcher == "slurm":
        res = write_slurm(study, args.study, cells, submit=args.submit)
        _progress(f"wrote {res['array']} ({len(cells)} tasks) and {res['merge']}"
                  + (f"; submitted job {res['job']}, merge job {res['merge_job']}" if "job" in res else
                     f"; submit: jid=$(sbatch --parsable {res['array']}) && sbatch --dependency=afterok:$jid {res['merge']}"), quiet)
        return res
    if args.submit:
        raise ValueError("--submit needs --launcher slurm")
    if study.threads is not None:
        import torch

        torch.set_num_threads(study.threads)
    if args.dry_run:
        return dry_run(study, cells, quiet)
    t0 = time.perf_counter()
    identities = {c.name: cell_identity(c, study.seed) for c in cells}
    for c in cells:  # refuse a changed identity before any work
        _check_cell(study.output / "cells" / c.name, c, identities[c.name]["sha256"])
    busy = []
    for i, c in enumerate(cells):
        _progress(f"=== cell {i + 1}/{len(cells)}: {c.name} (elapsed {(time.perf_counter() - t0) / 60:.1f} min)", quiet)
        try:
            run_cell(c, study, identities[c.name], quiet)
        except CellBusyError as err:  # another process (e.g. a SLURM task) runs it: go on with the others
            _progress(f"[{c.name}] skipped: {err}", quiet)
            busy.append(c.name)
    if busy:
        _progress(f"cells run by other processes (not waited for): {', '.join(busy)}", quiet)
    _progress(f"all {len(cells)} cells done in {(time.perf_counter() - t0) / 60:.1f} min", quiet)
    return None if args.no_report else report(study, quiet)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``study.py`` / ``robustattr-study``: one-line errors with exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_train"]:  # the training subprocess: train.py's CLI (sys.argv kept for DDP re-launches)
        from robustattr.apps.train import train_main

        train_main(argv[1:])
        return
    debug = "--debug" in argv or os.environ.get("ROBUSTATTR_DEBUG", "").lower() not in ("", "0", "false", "no")
    try:
        cli(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if debug:
            raise
        print(f"study.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("study.py: interrupted; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
