"""Scaling of ``certify.py`` over processes: the same certification on 1 and 2 CPU processes (gloo).

The same command — ``certify.py smoothing`` on ``--num_samples`` digits validation samples with
``--n_samples`` Monte Carlo samples each, batches of 2, one thread per process — is run as one
plain process (``t1``) and under ``torchrun --standalone --nproc_per_node 2`` (``t2``), each
into a fresh output folder, alternating which goes first in each pair. Reported per pair and as
median / min / max over pairs:

- wall times of the whole command (start-up, checkpoint and data loading, certification, merge,
  reports) and the scaling efficiency ``t1 / (2·t2)`` (1 = perfect; what is lost is start-up,
  rendezvous, the last rank's wait and the merge);
- the compute-only efficiency from the per-sample ``seconds`` of the shards
  (``c1 / (2·max_r c2_r)``);
- ``os.getloadavg()`` before each run and the number of CPUs: on a shared machine other
  processes take cores away from the 2-process run first, so the numbers are only meaningful
  with the load recorded;
- whether the 1- and 2-process reports are identical (result columns, as text).

The checkpoint is the default digits SmallCNN trained 15 batches by ``train.py``'s CLI
(certification cost does not depend on accuracy). Writes
``benchmarks/results/certify_scaling.json``.

    python benchmarks/certify_scaling.py [--quick] [--pairs 2] [--n_samples 1800] [--num_samples 16]

The defaults (2 pairs, 16 samples × N = 1800 ≈ 29 000 gradients per run; the default SmallCNN
runs ≈ 400–500 gradients/s on one core) are sized for about 4 minutes on an idle 2-core
machine (an estimate from CPU times measured under load); ``total_wall_s`` in the JSON
records how long the whole benchmark took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "certify_scaling.json"


def make_checkpoint(folder: Path) -> Path:
    """Train the default digits SmallCNN for 15 batches with train.py's CLI (one thread); its checkpoint."""
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from robustattr.apps.train import build_cli\n"
        "cli = build_cli(['fit', '--config', 'configs/experiment/digits_smallcnn.yaml', '--trainer.max_epochs', '1',\n"
        "  '--trainer.limit_train_batches', '15', '--trainer.limit_val_batches', '1',\n"
        "  '--trainer.logger', 'lightning.pytorch.loggers.CSVLogger', '--trainer.logger.save_dir', sys.argv[1],\n"
        "  '--trainer.enable_progress_bar', 'false', '--trainer.enable_model_summary', 'false',\n"
        "  '--trainer.default_root_dir', sys.argv[1]])\n"
        "print(cli.trainer.checkpoint_callback.best_model_path)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=REPO, env=_env(), capture_output=True,
                         text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    return env


def certify_command(nproc: int, ckpt: Path, out: Path, num_samples: int, n_samples: int) -> list[str]:
    """``python certify.py smoothing …`` (nproc 1: no launcher) or the same under torchrun."""
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [*launcher, str(REPO / "certify.py"), "smoothing", "--checkpoint", str(ckpt), "--output", str(out),
            "--num_samples", str(num_samples), "--batch_size", "2", "--n_samples", str(n_samples),
            "--radius", "0.3", "--no_progress", "--no_wandb"]


def _shard_seconds(out: Path) -> list[float]:
    """Per shard, the summed per-sample ``seconds`` (the rank's certification time)."""
    totals = []
    for path in sorted((out / "rows").glob("*.tsv")):
        lines = [ln.split("\t") for ln in path.read_text().splitlines() if not ln.startswith("#identity\t")]
        k = lines[0].index("seconds")
        totals.append(sum(float(r[k]) for r in lines[1:]))
    return totals


def _results(path: Path) -> list[list[str]]:
    lines = [ln.split("\t") for ln in path.read_text().splitlines()]
    keep = [k for k, c in enumerate(lines[0]) if c != "seconds"]
    return [[r[k] for k in keep] for r in lines]


def timed_run(nproc: int, ckpt: Path, out: Path, num_samples: int, n_samples: int) -> dict:
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(certify_command(nproc, ckpt, out, num_samples, n_samples), cwd=REPO, env=_env(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"certify.py on {nproc} process(es) exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"wall_s": wall, "compute_s": _shard_seconds(out), "loadavg_before": list(load),
            "loadavg_after": list(os.getloadavg())}


def _stats(v: list[float]) -> dict:
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 pair, N = 1000")
    ap.add_argument("--pairs", type=int, default=None, help="pairs of (1-process, 2-process) runs (default 2; 1 with --quick)")
    ap.add_argument("--n_samples", type=int, default=None, help="Monte Carlo samples per input (default 1800; 1000 with --quick)")
    ap.add_argument("--num_samples", type=int, default=16, help="digits validation samples certified")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.pairs is not None and args.pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {args.pairs}")
    if args.n_samples is not None and args.n_samples < 1:
        raise ValueError(f"--n_samples must be >= 1, got {args.n_samples}")
    pairs = args.pairs or (1 if args.quick else 2)
    n_mc = args.n_samples or (1000 if args.quick else 1800)
    start, load_start = time.perf_counter(), list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="certify_scaling_") as tmp:
        tmp_path = Path(tmp)
        ckpt = make_checkpoint(tmp_path / "ckpt")
        runs: list[dict] = []
        identical = True
        for k in range(pairs):
            order = (1, 2) if k % 2 == 0 else (2, 1)
            pair: dict[int, dict] = {}
            for nproc in order:
                out = tmp_path / f"pair{k}_np{nproc}"
                pair[nproc] = timed_run(nproc, ckpt, out, args.num_samples, n_mc)
                print(f"pair {k}: {nproc} process(es) {pair[nproc]['wall_s']:.1f} s "
                      f"(load {pair[nproc]['loadavg_before'][0]:.2f})", flush=True)
            identical &= _results(tmp_path / f"pair{k}_np1" / "certify.tsv") == _results(tmp_path / f"pair{k}_np2" / "certify.tsv")
            t1, t2 = pair[1]["wall_s"], pair[2]["wall_s"]
            c1, c2 = sum(pair[1]["compute_s"]), max(pair[2]["compute_s"])
            runs.append({"order": list(order), "t1_s": t1, "t2_s": t2, "efficiency": t1 / (2 * t2),
                         "compute_1_s": c1, "compute_2_per_rank_s": pair[2]["compute_s"],
                         "compute_efficiency": c1 / (2 * c2),
                         "loadavg_before": {"1": pair[1]["loadavg_before"], "2": pair[2]["loadavg_before"]}})
    loads = [r["loadavg_before"][p][0] for r in runs for p in ("1", "2")]
    result = {
        "benchmark": "certify.py smoothing on 1 vs 2 CPU processes (gloo, torchrun --standalone), 1 thread each",
        "config": {"num_samples": args.num_samples, "n_samples": n_mc, "batch_size": 2, "radius": 0.3,
                   "model": "digits SmallCNN (configs/experiment/digits_smallcnn.yaml)", "pairs": pairs,
                   "quick": args.quick},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "t1_s": _stats([r["t1_s"] for r in runs]),
        "t2_s": _stats([r["t2_s"] for r in runs]),
        "efficiency": _stats([r["efficiency"] for r in runs]),
        "compute_efficiency": _stats([r["compute_efficiency"] for r in runs]),
        "loadavg_1min_before_runs": _stats(loads),
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "total_wall_s": time.perf_counter() - start,
        "identical_reports": identical,
        "target_efficiency": 0.8,
        "pairs": runs,
        "note": ("efficiency = t1 / (2 t2) of whole commands (start-up, loading, certification, merge, reports); "
                 "compute_efficiency from the shards' per-sample seconds. The load average is that of the whole "
                 "machine before each run: with other processes running, the 2-process run loses cores first."),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("t1_s", "t2_s", "efficiency", "compute_efficiency",
                                              "loadavg_1min_before_runs", "identical_reports")}, indent=2))
    return result


if __name__ == "__main__":
    main()
