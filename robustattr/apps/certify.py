"""``certify.py`` / ``robustattr-certify``: certify a checkpoint by uniform ℓ2 smoothing and write a report.

Outputs in ``--output``:

- ``certify.tsv``: one row per sample, written and flushed (fsync) as soon as its batch is
  certified: ``idx, label, prediction, h_norm, h_norm_lower, cos@eps=…, eps_max@tau=…,
  seconds`` ("not certified" where nothing is certified). With ``--bound paper`` also
  ``UNSOUND_paper_cos@eps=…`` columns (not a certificate).
- ``certify_config.json``: the parameters, including ``margin`` (the lower bound on ‖h‖
  used: ``bernstein`` or ``hoeffding``; ``--margin auto`` picks Bernstein for N ≥ 100); a
  re-run with the same folder resumes (samples already in the TSV are skipped, a torn last
  line is dropped) and refuses other parameters.
- ``summary.json``: medians/quantiles of the certified cosine per ε, fraction certified ≥ τ,
  median ε_max per τ, seconds per sample.
- ``cos_vs_eps.png`` (median and 25–75 % band) and ``frac_certified_vs_eps.png``.

``--mode bounds`` dispatches to ``robustattr.apps.bounds_report.main`` (worst-case bounds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robustattr.certify.smoothing import (
    DEFAULT_EPS_GRID,
    DEFAULT_TAUS,
    UNSOUND_LABEL,
    UniformSmoothingCertifier,
)

NOT_CERTIFIED = "not certified"
TSV = "certify.tsv"
CONFIG_JSON = "certify_config.json"
SUMMARY_JSON = "summary.json"
ATTRIBUTIONS = ("saliency", "input_x_gradient", "ig")


def _attribution(name: str, ig_steps: int = 32):  # type: ignore[no-untyped-def]
    from robustattr.attributions import InputXGradient, IntegratedGradients, Saliency

    if name == "saliency":
        return Saliency()
    if name == "input_x_gradient":
        return InputXGradient()
    if name == "ig":
        return IntegratedGradients(steps=ig_steps)
    raise ValueError(f"attribution must be one of {ATTRIBUTIONS}, got {name!r}")


def _fmt(v: float) -> str:
    return NOT_CERTIFIED if math.isnan(v) else f"{v:.10g}"


def _parse(v: str) -> float:
    return float("nan") if v == NOT_CERTIFIED else float(v)


def tsv_header(eps: Sequence[float], taus: Sequence[float], paper: bool) -> list[str]:
    """Columns of ``certify.tsv``."""
    cols = ["idx", "label", "prediction", "h_norm", "h_norm_lower"]
    cols += [f"cos@eps={e:g}" for e in eps]
    cols += [f"eps_max@tau={t:g}" for t in taus]
    if paper:
        cols += [f"{UNSOUND_LABEL}_cos@eps={e:g}" for e in eps]
    return cols + ["seconds"]


def _read_done(path: Path, header: list[str]) -> dict[int, list[str]]:
    """Complete rows already in the TSV (idx → fields); truncates a torn last line."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    lines = data.decode().splitlines()
    if not lines:
        return {}
    if lines[0].split("\t") != header:
        raise SystemExit(f"{path} has different columns than this run (was it made with other --eps/--taus/--bound?); use a new --output")
    rows: dict[int, list[str]] = {}
    for ln in lines[1:]:
        fields = ln.split("\t")
        if len(fields) == len(header):
            rows[int(fields[0])] = fields
    return rows


def _summary(rows: list[list[str]], header: list[str], eps: list[float], taus: list[float], params: dict) -> dict:
    col = {c: i for i, c in enumerate(header)}
    cos = np.array([[_parse(r[col[f"cos@eps={e:g}"]]) for e in eps] for r in rows], dtype=np.float64).reshape(len(rows), len(eps))
    em = np.array([[_parse(r[col[f"eps_max@tau={t:g}"]]) for t in taus] for r in rows], dtype=np.float64).reshape(len(rows), len(taus))
    trivial = np.nan_to_num(cos, nan=-1.0)  # not certified: only cos ≥ −1 holds
    q = [10, 25, 50, 75, 90]
    out: dict = {
        "params": params,
        "num_samples": len(rows),
        "sound": True,
        "note": "certified cosine lower bounds hold with probability >= 1-alpha per sample; "
        "'not certified' samples count as the trivial bound -1 in quantiles",
        "accuracy": float(np.mean([int(r[col["label"]]) == int(r[col["prediction"]]) for r in rows])) if rows else None,
        "median_h_norm": float(np.median([float(r[col["h_norm"]]) for r in rows])) if rows else None,
        "seconds_per_sample": float(np.mean([float(r[col["seconds"]]) for r in rows])) if rows else None,
        "per_eps": [],
        "per_tau": [],
    }
    for j, e in enumerate(eps):
        entry = {"eps": e, "frac_certified_any": float(np.mean(~np.isnan(cos[:, j]))) if rows else None}
        for qq in q:
            v = float(np.percentile(trivial[:, j], qq)) if rows else float("nan")
            entry[f"cos_q{qq}"] = v if v > -1.0 else NOT_CERTIFIED
        for t in taus:
            entry[f"frac_cos_ge_{t:g}"] = float(np.mean(trivial[:, j] >= t)) if rows else None
        out["per_eps"].append(entry)
    for k, t in enumerate(taus):
        med = float(np.median(np.nan_to_num(em[:, k], nan=0.0))) if rows else float("nan")
        out["per_tau"].append({"tau": t, "eps_max_median": med if med > 0 else NOT_CERTIFIED, "frac_certified": float(np.mean(~np.isnan(em[:, k]))) if rows else None})
    out["_arrays"] = (cos, trivial)
    return out


def _save_eps_plot(fig, ax, ylim: tuple[float, float], ylabel: str, title: str, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Shared styling of the two certification plots (log-ε x-axis); saves ``path`` and closes the figure."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_ylim(*ylim)
    ax.set_xlabel("ε (ℓ2, pixel units)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plots(output: Path, eps: list[float], taus: list[float], trivial: np.ndarray, title: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.asarray(eps, dtype=np.float64)
    pos = e > 0
    files: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if trivial.shape[0]:
        lo, med, hi = (np.percentile(trivial, p, axis=0) for p in (25, 50, 75))
        ax.fill_between(e[pos], lo[pos], hi[pos], alpha=0.3, label="25–75 % of samples")
        ax.plot(e[pos], med[pos], "o-", label="median")
    files["cos_plot"] = _save_eps_plot(
        fig, ax, (-1.02, 1.02), "certified cos(h(x), h(x+δ)) (−1: not certified)", title, output / "cos_vs_eps.png"
    )
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for t in taus:
        frac = (trivial >= t).mean(axis=0) if trivial.shape[0] else np.zeros_like(e)
        ax.plot(e[pos], frac[pos], "o-", label=f"τ = {t:g}")
    files["frac_plot"] = _save_eps_plot(
        fig, ax, (-0.02, 1.02), "fraction with certified cos ≥ τ", title, output / "frac_certified_vs_eps.png"
    )
    return files


def select_indices(n_total: int, num_samples: int | None, indices: Sequence[int] | None, seed: int) -> list[int]:
    """Explicit ``indices`` (validated), else ``num_samples`` from a seeded permutation (sorted)."""
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < n_total]
        if bad:
            raise ValueError(f"indices out of range [0, {n_total}): {bad[:5]}")
        if len(set(indices)) != len(indices):
            raise ValueError("indices contain duplicates")
        return list(indices)
    n = n_total if num_samples is None else min(num_samples, n_total)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


def certify_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    config: str | Path | None = None,
    split: str = "val",
    num_samples: int | None = 100,
    indices: Sequence[int] | None = None,
    radius: float = 0.25,
    n_samples: int = 1000,
    alpha: float = 1e-3,
    eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
    taus: Sequence[float] = DEFAULT_TAUS,
    attribution: str = "saliency",
    bound_M: float = 1.0,
    bounding: str = "normalize",
    bound: str = "sound",
    batch_size: int = 8,
    rows_per_forward: int = 1024,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    margin: str = "auto",
) -> dict:
    """Certify samples of a dataset split with a ``train.py`` checkpoint; write TSV, JSON and PNGs.

    Resumable: with an existing ``output`` holding the same parameters, only samples not
    yet in ``certify.tsv`` are certified (per-sample noise is seeded ``seed + idx``, so a
    resumed run equals an uninterrupted one). The class explained is the prediction.

    Returns:
        The summary dict (also written to ``summary.json``) with ``files``: paths of the
        TSV, JSON and PNG outputs.
    """
    from tqdm.auto import tqdm

    from robustattr.checkpoint import load_classifier

    certifier = UniformSmoothingCertifier(
        attribution=_attribution(attribution), radius=radius, n_samples=n_samples, alpha=alpha, bound_M=bound_M,
        bounding=bounding, eps_grid=list(eps_grid), taus=list(taus), batch_size=rows_per_forward, seed=seed, bound=bound,
        margin=margin,
    )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    module, dm = load_classifier(checkpoint, config, map_location=device)
    if dm is None:
        raise SystemExit("the checkpoint has no data configuration: pass --config <experiment.yaml>")
    dataset = dm.split(split)  # sets up the stage the split belongs to
    model = getattr(module, "model", module).eval()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    eps_l = [float(e) for e in certifier.eps_grid]
    taus_l = [float(t) for t in certifier.taus]
    idx_list = select_indices(len(dataset), num_samples, indices, seed)
    params = {
        "checkpoint": str(checkpoint), "split": split, "radius": radius, "n_samples": n_samples, "alpha": alpha,
        "eps_grid": eps_l, "taus": taus_l, "attribution": attribution, "bound_M": bound_M, "bounding": bounding,
        "bound": bound, "seed": seed, "indices": idx_list, "margin": certifier.margin_method,
        "margin_t": certifier.hoeffding_margin if certifier.margin_method == "hoeffding" else None,
    }
    cfg_path = output / CONFIG_JSON
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        old.setdefault("margin", "hoeffding")  # runs written before the Bernstein margin existed
        diff = [k for k in params if k not in ("checkpoint",) and old.get(k) != params[k]]
        if diff:
            raise SystemExit(f"{output} holds a run with different parameters ({', '.join(diff)}); use a new --output")
    else:
        cfg_path.write_text(json.dumps(params, indent=2))
    header = tsv_header(eps_l, taus_l, bound == "paper")
    tsv = output / TSV
    done = _read_done(tsv, header)
    todo = [i for i in idx_list if i not in done]
    with open(tsv, "a", encoding="utf-8") as f:
        if not done and f.tell() == 0:
            f.write("\t".join(header) + "\n")
            f.flush()
        bar = tqdm(total=len(idx_list), initial=len(idx_list) - len(todo), desc="certify", disable=not progress)
        for s in range(0, len(todo), batch_size):
            ids = todo[s : s + batch_size]
            items = [dataset[i] for i in ids]
            x = torch.stack([it[0] for it in items]).to(device)
            labels = [int(it[1]) for it in items]
            cert = certifier.certify(model, x, y=None, index=torch.tensor(ids))
            cols = [cert.y, cert.h_norm, cert.h_norm_lower, cert.cos_lower, cert.eps_max, cert.seconds]
            y_, hn, hl, cos, em, secs = (c.detach().cpu().tolist() for c in cols)
            paper = cert.paper_cos_unsound.cpu().tolist() if cert.paper_cos_unsound is not None else None
            for b, i in enumerate(ids):
                row = [str(i), str(labels[b]), str(y_[b]), _fmt(hn[b]), _fmt(hl[b])]
                row += [_fmt(v) for v in cos[b]] + [_fmt(v) for v in em[b]]
                if paper is not None:
                    row += [_fmt(v) for v in paper[b]]
                row.append(f"{secs[b]:.6g}")
                f.write("\t".join(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
            bar.update(len(ids))
        bar.close()
    rows_by_idx = _read_done(tsv, header)
    rows = [rows_by_idx[i] for i in idx_list if i in rows_by_idx]
    summary = _summary(rows, header, eps_l, taus_l, params)
    _, trivial = summary.pop("_arrays")
    title = f"r={radius:g}, N={n_samples}, α={alpha:g}, {certifier.margin_method}, {attribution}, {len(rows)} samples ({split})"
    files = _plots(output, eps_l, taus_l, trivial, title)
    files.update({"tsv": tsv, "summary": output / SUMMARY_JSON})
    summary["files"] = {k: str(v) for k, v in files.items()}
    (output / SUMMARY_JSON).write_text(json.dumps(summary, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The ``certify.py`` argument parser."""
    p = argparse.ArgumentParser(prog="certify.py", description="Certify attribution robustness of a checkpoint by uniform l2 smoothing.")
    p.add_argument("--mode", choices=("smoothing", "bounds"), default="smoothing", help="smoothing certificate (sound) or worst-case bounds report")
    p.add_argument("--checkpoint", required=True, help="Lightning checkpoint written by train.py")
    p.add_argument("--config", default=None, help="experiment YAML (default: the config stored in the checkpoint)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--num-samples", type=int, default=100, help="samples drawn (seeded) from the split")
    g.add_argument("--indices", type=str, default=None, help="comma-separated dataset indices")
    p.add_argument("--radius", type=float, default=0.25, help="smoothing radius r (l2, pixel units)")
    p.add_argument("--n-samples", type=int, default=1000, help="Monte Carlo samples N")
    p.add_argument("--alpha", type=float, default=1e-3, help="failure probability of the Monte Carlo bound")
    p.add_argument("--eps", type=str, default=",".join(f"{e:g}" for e in DEFAULT_EPS_GRID), help="comma-separated eps grid")
    p.add_argument("--taus", type=str, default=",".join(f"{t:g}" for t in DEFAULT_TAUS), help="comma-separated cosine thresholds")
    p.add_argument("--attribution", default="saliency", choices=ATTRIBUTIONS)
    p.add_argument("--bound-M", type=float, default=1.0, help="norm bound M of the base attribution")
    p.add_argument("--bounding", default="normalize", choices=("normalize", "clip"))
    p.add_argument("--margin", default="auto", choices=("auto", "bernstein", "hoeffding"), help="Monte Carlo lower bound on |h|: auto = bernstein for N >= 100, else hoeffding")
    p.add_argument("--bound", default="sound", choices=("sound", "paper"), help="'paper' ADDS the UNSOUND summarised bound (reproduction only)")
    p.add_argument("--batch-size", type=int, default=8, help="inputs certified together")
    p.add_argument("--rows-per-forward", type=int, default=1024, help="noisy copies per forward/backward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--output", default="outputs/certify", help="output folder (re-use it to resume)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> dict | None:
    """Entry point of ``certify.py``; ``argv`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", default="smoothing")
    known, rest = pre.parse_known_args(argv)
    if known.mode == "bounds":
        try:
            from robustattr.apps import bounds_report
        except ImportError:
            print("certify.py --mode bounds: the worst-case bounds report (robustattr.apps.bounds_report) is not available in this version.", file=sys.stderr)
            raise SystemExit(2) from None
        return bounds_report.main(rest)
    args = build_parser().parse_args(argv)
    from robustattr.checkpoint import CheckpointError

    try:
        summary = certify_checkpoint(
            args.checkpoint, args.output, config=args.config, split=args.split,
            num_samples=None if args.indices else args.num_samples,
            indices=[int(v) for v in args.indices.split(",")] if args.indices else None,
            radius=args.radius, n_samples=args.n_samples, alpha=args.alpha, eps_grid=_floats(args.eps), taus=_floats(args.taus),
            attribution=args.attribution, bound_M=args.bound_M, bounding=args.bounding, bound=args.bound,
            batch_size=args.batch_size, rows_per_forward=args.rows_per_forward, seed=args.seed, device=args.device,
            progress=not args.no_progress, margin=args.margin,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"certify.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"certified {summary['num_samples']} samples; report:")
    for k, v in summary["files"].items():
        print(f"  {k:>8}: {v}")
    return summary
