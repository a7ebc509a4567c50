"""Reports derived from a run's rows: merged per-sample TSV, ``summary.json`` and plots.

Everything here is regenerated from the rows of the run store (``robustattr.apps.store``) at
the end of every run, for exactly the selected samples, and written atomically (temp file +
rename): a reader never sees a partial file, and a kill during the write leaves the previous
version. Plots use matplotlib's ``Figure`` directly (Agg), never ``pyplot``'s global state.

Per subcommand:

- ``smoothing``: ``certify.tsv`` (``not certified`` where a certified cosine or ε_max does
  not exist), ``cos_vs_eps.png`` (median and 25–75 % band of the certified cosine over
  samples, and the fraction certified, per ε), ``frac_certified_vs_eps.png`` (fraction with
  certified cosine ≥ τ, one line per τ). Certificates: F. Wang & A. W.-K. Kong, "Certified ℓ2
  Attribution Robustness via Uniformly Smoothed Attributions", arXiv:2405.06361 (2024).
- ``bounds``: ``bounds.tsv``, ``bounds_hist.png`` (per sample ``T_e − T̂_e`` and the relative
  excess ``(T̂_e − T'_e)/T'_e`` of the strongest attack). Bounds and protocol: F. Wang &
  A. W.-K. Kong, "A Practical Upper Bound for the Worst-Case Attribution Deviations", CVPR 2023,
  arXiv:2303.00340.
- ``attack``: ``attack.tsv``, ``attack_<name>.png`` (histograms of every metric over the
  attacked samples).
- any other evaluator: ``<subcommand>.tsv`` and ``summary.json``.
"""

from __future__ import annotations

import io
import json
import math
import platform
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustattr.apps.store import ROWS_DIR, RUN_JSON, atomic_write, format_value, is_timing_column

__all__ = [
    "NOT_CERTIFIED",
    "AttackReport",
    "BoundsReport",
    "Curve",
    "Report",
    "RunInfo",
    "SmoothingReport",
    "certified_quantile",
    "report_for",
    "versions",
    "write_reports",
]

NOT_CERTIFIED = "not certified"


@dataclass
class RunInfo:
    """What a report needs besides the rows.

    Attributes:
        subcommand: ``smoothing``, ``bounds``, ``attack`` (or another evaluator's name).
        output: the run's folder.
        identity: the identity stored in ``run.json``.
        selection: the selected dataset indices, in report order.
        options: run options that do not change a result (split, selection, batch size, device).
        counts: ``selected``, ``resumed`` (rows found at the start), ``evaluated`` (this run).
    """

    subcommand: str
    output: Path
    identity: dict[str, Any]
    selection: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that compute or write results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("robustattr", "torch", "numpy", "scipy", "lightning", "jsonargparse", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def certified_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Per column, the lower ``q``-quantile of certified values, not-certified samples ranked lowest.

    ``values: [N, E]`` with NaN = not certified (treated as −∞). No interpolation: the
    ``ceil(q·N)``-th smallest value of each column (numpy's ``inverted_cdf``), NaN where that
    sample is not certified. At least ``N − ceil(q·N) + 1`` samples are certified with at least
    this value. ``q = 0.5`` is the lower median (the evaluators' ``cos_median``); ``q = 0.25``
    and ``0.75`` are the edges of the 25–75 % band.
    """
    n = values.shape[0]
    if n == 0:
        return np.full(values.shape[1:], np.nan)
    ordered = np.sort(np.where(np.isnan(values), -np.inf, values), axis=0)
    v = ordered[max(math.ceil(q * n), 1) - 1]
    return np.where(np.isfinite(v), v, np.nan)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Tensor):
        v = v.tolist()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _flat_params(params: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(params, Mapping):
        out: dict[str, Any] = {}
        for k, v in params.items():
            if k == "class":
                if prefix:
                    out[prefix[:-1]] = str(v).rsplit(".", 1)[-1]
                continue
            out.update(_flat_params(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: params}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


@dataclass
class Curve:
    """One line plot as data: ``x`` values and named series over them (NaN: no value).

    Attributes:
        title: plot title.
        xname: name of the x axis.
        x: x values ``[P]``.
        series: ``{name: values [P]}``.
    """

    title: str
    xname: str
    x: list[float]
    series: dict[str, list[float]]


class Report:
    """Generic report: merged TSV and ``summary.json``; subclasses add plots and console lines."""

    #: merged per-sample TSV; ``None``: ``<subcommand>.tsv``
    tsv_name: str | None = None
    #: evaluator parameters shown in plot titles (prefix match); empty: every scalar parameter
    title_keys: tuple[str, ...] = ()
    #: one sentence on what the numbers are, written into ``summary.json``
    note: str = ""

    def tsv_file(self, info: RunInfo) -> str:
        return self.tsv_name or f"{info.subcommand}.tsv"

    def cell(self, column: str, value: Any) -> str:
        """Text of one cell of the merged TSV."""
        return format_value(value)

    def summary_value(self, key: str, value: float) -> Any:
        """JSON value of one summary entry (non-finite → ``null``)."""
        return _jsonable(value)

    def title(self, info: RunInfo, what: str) -> str:
        """Plot title: what, samples, split, checkpoint and the evaluator's parameters."""
        ident = info.identity
        head = (
            f"{what} — {info.subcommand}, {len(info.selection)} samples ({ident.get('split', '?')}), "
            f"checkpoint {str(ident.get('checkpoint_sha256', ''))[:12]}"
        )
        params = _flat_params(ident.get("evaluator", {}))
        keep = {
            k: v
            for k, v in params.items()
            if (not self.title_keys or any(k == t or k.startswith(t + ".") for t in self.title_keys))
            and (not isinstance(v, list) or len(v) <= 4)
        }
        body = ", ".join(f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in keep.items())
        return "\n".join([head, *textwrap.wrap(body, 90)])

    def figures(self, info: RunInfo, results: Mapping[str, Tensor]) -> dict[str, Any]:
        """Matplotlib figures ``{file name: Figure}`` (none by default)."""
        return {}

    def curves(self, info: RunInfo, results: Mapping[str, Tensor]) -> dict[str, Curve]:
        """Line plots as data ``{name: Curve}`` for experiment trackers (none by default)."""
        return {}

    def lines(self, info: RunInfo, results: Mapping[str, Tensor], summary: Mapping[str, float]) -> list[str]:
        """The summary printed at the end of a run."""
        n = len(info.selection)
        out = [f"{info.subcommand}: {n} samples"]
        out += [f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}" for k, v in summary.items()]
        return out

    def write(self, info: RunInfo, results: Mapping[str, Tensor], summary: Mapping[str, float]) -> dict[str, Path]:
        """Write the merged TSV, the plots and ``summary.json`` (last), each atomically."""
        out = info.output
        files: dict[str, Path] = {}
        columns = list(results)
        cols = {c: results[c].tolist() for c in columns}
        lines = ["\t".join(["index", *columns])]
        for b, i in enumerate(info.selection):
            lines.append("\t".join([str(i), *(self.cell(c, cols[c][b]) for c in columns)]))
        files["tsv"] = atomic_write(out / self.tsv_file(info), "\n".join(lines) + "\n")
        for name, fig in self.figures(info, results).items():
            files[Path(name).stem] = atomic_write(out / name, _png(fig))
        files["summary"] = out / "summary.json"
        doc = {
            "subcommand": info.subcommand,
            "note": self.note,
            "summary": {k: self.summary_value(k, v) for k, v in summary.items()},
            "counts": dict(info.counts),
            "parameters": info.identity.get("evaluator"),
            "options": _jsonable(info.options),
            "identity": info.identity,
            "indices": list(info.selection),
            "versions": versions(),
            "files": {k: str(v) for k, v in {**files, "run": out / RUN_JSON, "rows": out / ROWS_DIR}.items()},
        }
        atomic_write(files["summary"], json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return files


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _grid_columns(results: Mapping[str, Tensor], prefix: str) -> tuple[list[str], list[float]]:
    cols = [c for c in results if c.startswith(prefix)]
    return cols, [float(c[len(prefix) :]) for c in cols]


class SmoothingReport(Report):
    """``certify.tsv``, ``cos_vs_eps.png``, ``frac_certified_vs_eps.png`` (uniform-smoothing certificates)."""

    tsv_name = "certify.tsv"
    title_keys = ("attribution", "radius", "n_samples", "alpha", "margin", "bound_M", "bounding", "bound")
    note = (
        "sound certificates: per sample, with probability >= 1 - alpha, cos(h(x), h(x+delta)) >= cos@eps "
        "for every ||delta||_2 <= eps; 'not certified' (null in JSON) where nothing is certified. "
        "UNSOUND_paper_* columns (bound=paper) are not certificates."
    )
    _certificate_prefixes = ("cos@eps=", "eps_max@tau=", "UNSOUND_paper_cos@eps=")

    def cell(self, column: str, value: Any) -> str:
        if column.startswith(self._certificate_prefixes) and isinstance(value, float) and math.isnan(value):
            return NOT_CERTIFIED
        return format_value(value)

    def summary_value(self, key: str, value: float) -> Any:
        if key.startswith("cos") and isinstance(value, float) and math.isnan(value):
            return NOT_CERTIFIED
        return _jsonable(value)

    @staticmethod
    def _cos(results: Mapping[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
        cols, eps = _grid_columns(results, "cos@eps=")
        n = len(next(iter(results.values()))) if results else 0
        cos = np.stack([_np(results[c]) for c in cols], axis=1) if cols else np.zeros((n, 0))
        return np.asarray(eps, dtype=np.float64), cos

    def figures(self, info: RunInfo, results: Mapping[str, Tensor]) -> dict[str, Any]:
        from matplotlib.figure import Figure

        eps, cos = self._cos(results)
        pos = eps > 0  # log axis: ε = 0 (always cos = 1 where certified) is left out
        e, c = eps[pos], cos[:, pos]
        n = c.shape[0]
        out: dict[str, Any] = {}

        fig = Figure(figsize=(6.4, 6.2))
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
        med, lo, hi = (certified_quantile(c, q) for q in (0.5, 0.25, 0.75))
        finite = c[np.isfinite(c)]
        drawn = np.concatenate([v[np.isfinite(v)] for v in (lo, med, hi)])  # the y range of what is drawn
        ymin = float(min(drawn.min(), 0.9)) if drawn.size else 0.0
        ymin = max(-1.0, ymin - 0.05 * (1.0 - ymin))
        top.set_ylim(ymin, 1.0 + 0.02 * (1.0 - ymin))
        band = np.isfinite(hi) & np.isfinite(lo)
        top.fill_between(e, lo, hi, where=band, alpha=0.25, color="C0", label="25–75 % of samples")
        open_low = np.isfinite(hi) & ~np.isfinite(lo)
        if open_low.any():
            top.fill_between(e, ymin, hi, where=open_low, facecolor="none",
                             edgecolor="C0", hatch="///", linewidth=0,
                             label="> 25 % not certified (band open below)")
        for label, v in (("25 % and 75 % quantiles", lo), ("_nolegend_", hi)):  # visible also without a band
            top.plot(e, v, "_", color="C0", markersize=12, label=label)
        top.plot(e, med, "o-", color="C0", label="median sample")
        nc = ~np.isfinite(med)
        if nc.any():
            top.plot(e[nc], np.full(nc.sum(), ymin), "x", color="C3", markersize=9, clip_on=False,
                     label="median sample not certified")
        if not finite.size:
            top.text(0.5, 0.5, "no sample certified at any ε", transform=top.transAxes, ha="center")
        top.set_ylabel("certified cos(h(x), h(x+δ))")
        top.legend(fontsize=7, loc="lower left")
        frac_any = np.isfinite(c).mean(axis=0) if n else np.zeros_like(e)
        bottom.plot(e, frac_any, "s-", color="k")
        bottom.set_ylim(-0.03, 1.03)
        bottom.set_ylabel("fraction certified")
        bottom.set_xlabel("ε (ℓ2, pixel units)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
        top.set_title(self.title(info, "certified cosine vs ε"), fontsize=7)
        fig.tight_layout()
        out["cos_vs_eps.png"] = fig

        fig = Figure(figsize=(6.4, 4.6))
        ax = fig.subplots()
        taus = sorted({float(t) for t in _grid_columns(results, "eps_max@tau=")[1]})
        markers, styles = "osD^vP*X", ("-", "--", "-.", ":")
        for k, t in enumerate(taus):
            frac = (np.nan_to_num(c, nan=-np.inf) >= t).mean(axis=0) if n else np.zeros_like(e)
            ax.plot(e, frac, linestyle=styles[k % len(styles)], marker=markers[k % len(markers)],
                    markersize=11 - 1.5 * (k % 5), markerfacecolor="none", markeredgewidth=1.4,
                    label=f"τ = {t:g}", zorder=3 + k)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.set_xlabel("ε (ℓ2, pixel units)")
        ax.set_ylabel("fraction with certified cos ≥ τ")
        ax.legend(fontsize=8, title="lines may overlap: see markers", title_fontsize=7)
        ax.set_title(self.title(info, "fraction certified ≥ τ vs ε"), fontsize=7)
        fig.tight_layout()
        out["frac_certified_vs_eps.png"] = fig
        return out

    def curves(self, info: RunInfo, results: Mapping[str, Tensor]) -> dict[str, Curve]:
        """``cos_vs_eps``: median, 25 % and 75 % certified cosine and fraction certified per ε > 0;
        ``frac_certified_vs_eps``: fraction with certified cosine ≥ τ, one series per τ.

        Quantiles rank not-certified samples lowest (:func:`certified_quantile`; NaN where that
        sample is not certified), as in ``cos_vs_eps.png``.
        """
        eps, cos = self._cos(results)
        pos = eps > 0
        e, c = eps[pos], cos[:, pos]
        n = c.shape[0]
        x = [float(v) for v in e]
        quant = {name: certified_quantile(c, q).tolist() for name, q in
                 (("median certified cosine", 0.5), ("25 % quantile", 0.25), ("75 % quantile", 0.75))}
        frac_any = (np.isfinite(c).mean(axis=0) if n else np.zeros_like(e)).tolist()
        taus = sorted({float(t) for t in _grid_columns(results, "eps_max@tau=")[1]})
        fracs = {
            f"tau={t:g}": ((np.nan_to_num(c, nan=-np.inf) >= t).mean(axis=0) if n else np.zeros_like(e)).tolist()
            for t in taus
        }
        return {
            "cos_vs_eps": Curve("certified cosine vs eps", "eps", x, {**quant, "fraction certified": frac_any}),
            "frac_certified_vs_eps": Curve("fraction with certified cosine >= tau vs eps", "eps", x, fracs),
        }

    def lines(self, info: RunInfo, results: Mapping[str, Tensor], summary: Mapping[str, float]) -> list[str]:
        eps, cos = self._cos(results)
        n = cos.shape[0]
        taus = sorted({float(t) for t in _grid_columns(results, "eps_max@tau=")[1]})
        med = certified_quantile(cos, 0.5)
        out = [f"smoothing: {n} samples"]
        for key in ("accuracy", "h_norm_median", "h_norm_lower_median"):
            if key in summary:
                out[0] += f", {key} {summary[key]:.4g}"
        for j, e in enumerate(eps):
            col = np.nan_to_num(cos[:, j], nan=-np.inf)
            k_any = int(np.isfinite(cos[:, j]).sum())
            ge = ", ".join(f"≥ {t:g}: {int((col >= t).sum())}/{n}" for t in taus)
            v = float(summary.get(f"cos_median@eps={e:g}", med[j]))  # the evaluator's median if it reports one
            m = NOT_CERTIFIED if math.isnan(v) else f"{v:.4f}"
            out.append(f"  ε = {e:g}: certified {k_any}/{n} ({ge}); median certified cosine {m}")
        return out


def _prefixes(results: Mapping[str, Tensor], name: str) -> list[str]:
    return [c[: -len(name)] for c in results if c == name or c.endswith("/" + name)]


class BoundsReport(Report):
    """``bounds.tsv`` and ``bounds_hist.png`` (first-order worst-case estimates, not certificates)."""

    tsv_name = "bounds.tsv"
    title_keys = ("attribution", "norms", "eps", "iters", "surrogate_beta", "smooth_pool", "attack_repeats", "attack_steps", "topk")
    note = (
        "first-order (Taylor) estimates of the worst-case attribution deviation, not certificates: "
        "T_e = xi_max*eps, T_e_prime with the curvature correction; attacks (T_hat_e = dist_max) "
        "can exceed T_e_prime by O(eps^2) (see max_rel_excess_T_e_prime)."
    )

    @staticmethod
    def _attack(results: Mapping[str, Tensor], p: str, name: str) -> Tensor | None:
        return results.get(p + name, results.get(name))

    def _per_norm(self, info: RunInfo, results: Mapping[str, Tensor]) -> list[tuple[str, dict[str, np.ndarray]]]:
        norms = info.identity.get("evaluator", {}).get("norms")
        single = str(norms[0]) if isinstance(norms, list) and len(norms) == 1 else "T_e"
        out = []
        for p in _prefixes(results, "T_e"):
            dist, skipped = self._attack(results, p, "dist_max"), self._attack(results, p, "skipped")
            d: dict[str, np.ndarray] = {"T_e": _np(results[p + "T_e"])}
            if p + "T_e_prime" in results:
                d["T_e_prime"] = _np(results[p + "T_e_prime"])
            if dist is not None:
                d["dist_max"] = _np(dist)
                d["attacked"] = ~skipped.bool().numpy() if skipped is not None else np.ones(len(dist), bool)
            out.append((p.rstrip("/") or single, d))
        return out

    def figures(self, info: RunInfo, results: Mapping[str, Tensor]) -> dict[str, Any]:
        from matplotlib.figure import Figure

        norms = self._per_norm(info, results)
        fig = Figure(figsize=(6.4, 6.2))
        a, b = fig.subplots(2, 1)
        any_attack = False
        for norm, d in norms:
            if "dist_max" not in d:
                a.hist(d["T_e"][np.isfinite(d["T_e"])], bins=30, alpha=0.5, label=f"{norm}: T_e")
                continue
            any_attack = True
            keep = d["attacked"]
            gap = (d["T_e"] - d["dist_max"])[keep]
            a.hist(gap[np.isfinite(gap)], bins=30, alpha=0.5, label=f"{norm} ({int(keep.sum())} attacked)")
            if "T_e_prime" in d:
                rel = ((d["dist_max"] - d["T_e_prime"]) / d["T_e_prime"])[keep]
                b.hist(rel[np.isfinite(rel)], bins=30, alpha=0.5, label=norm)
        if any_attack:
            for ax in (a, b):
                ax.axvline(0.0, color="k", lw=1)
            a.set_xlabel("T_e − T̂_e per sample (< 0: the attack exceeded the first-order estimate)")
            b.set_xlabel("(T̂_e − T'_e) / T'_e per sample (> 0: the attack exceeded T'_e)")
            b.set_ylabel("samples")
            b.legend(fontsize=7)
        else:
            a.set_xlabel("T_e per sample (no attack was run: attack_repeats = 0)")
            b.set_axis_off()
        a.set_ylabel("samples")
        a.legend(fontsize=7)
        a.set_title(self.title(info, "worst-case bounds vs attacks"), fontsize=7)
        fig.tight_layout()
        return {"bounds_hist.png": fig}

    def lines(self, info: RunInfo, results: Mapping[str, Tensor], summary: Mapping[str, float]) -> list[str]:
        n = len(info.selection)
        out = [f"bounds: {n} samples evaluated"]
        for norm, d in self._per_norm(info, results):
            line = f"  {norm}: median T_e {np.nanmedian(d['T_e']):.4g}"
            if "T_e_prime" in d:
                line += f", median T'_e {np.nanmedian(d['T_e_prime']):.4g}"
            out.append(line)
            if "dist_max" not in d:
                out.append("    no attack was run (attack_repeats = 0)")
                continue
            keep = d["attacked"]
            m = int(keep.sum())
            out.append(f"    attacked {m}/{n}; skipped {n - m} (misclassified samples are not attacked)")
            if m:
                outside = int((d["dist_max"][keep] > d["T_e"][keep]).sum())
                out.append(f"    outside T_e: {outside}/{m} ({outside / m:.3g})")
                if "T_e_prime" in d:
                    rel = (d["dist_max"] - d["T_e_prime"])[keep] / d["T_e_prime"][keep]
                    k = int((rel > 0).sum())
                    out.append(f"    outside T'_e: {k}/{m} ({k / m:.3g}); largest relative excess over T'_e {np.nanmax(rel):.3g}")
        return out


class AttackReport(Report):
    """``attack.tsv`` and one ``attack_<name>.png`` per attack (attribution attacks + metrics)."""

    tsv_name = "attack.tsv"
    title_keys = ("attribution", "attacks", "explain", "metrics")
    note = "attribution attacks: metric means over correctly classified, attacked samples (skipped = misclassified)"
    _flags = ("success", "skipped", "criterion")

    @staticmethod
    def _attacks(results: Mapping[str, Tensor]) -> list[str]:
        return [c[: -len("/success")] for c in results if c.endswith("/success")]

    def _metrics(self, results: Mapping[str, Tensor], name: str) -> list[str]:
        return [
            c for c in results
            if c.startswith(name + "/") and c.split("/", 1)[1] not in self._flags and not is_timing_column(c)
        ]

    def figures(self, info: RunInfo, results: Mapping[str, Tensor]) -> dict[str, Any]:
        from matplotlib.figure import Figure

        out: dict[str, Any] = {}
        for name in self._attacks(results):
            metrics = self._metrics(results, name)
            skipped = results.get(f"{name}/skipped")
            keep = ~skipped.bool().numpy() if skipped is not None else np.ones(len(info.selection), bool)
            cols = min(3, max(1, len(metrics)))
            rows = max(1, math.ceil(len(metrics) / cols))
            fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.8))
            axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
            for ax, m in zip(axes, metrics, strict=False):
                v = _np(results[m])[keep]
                ax.hist(v[np.isfinite(v)], bins=20)
                ax.set_xlabel(m.split("/", 1)[1], fontsize=8)
            for ax in axes[len(metrics) :]:
                ax.set_axis_off()
            axes[0].set_ylabel("attacked samples")
            fig.suptitle(self.title(info, f"attack {name}: {int(keep.sum())} attacked samples"), fontsize=7)
            fig.tight_layout()
            out[f"attack_{name.replace('/', '_')}.png"] = fig
        return out

    def lines(self, info: RunInfo, results: Mapping[str, Tensor], summary: Mapping[str, float]) -> list[str]:
        n = len(info.selection)
        out = [f"attack: {n} samples"]
        for name in self._attacks(results):
            skipped = results.get(f"{name}/skipped")
            m = n - int(skipped.sum()) if skipped is not None else n
            rate = summary.get(f"{name}/success_rate", float("nan"))
            means = ", ".join(
                f"{k.split('/', 1)[1]} {summary[k]:.4g}" for k in self._metrics(results, name) if k in summary
            )
            out.append(f"  {name}: attacked {m}/{n} (skipped: misclassified), success rate {rate:.3g}; means: {means}")
        return out


_REPORTS: dict[str, Report] = {"smoothing": SmoothingReport(), "bounds": BoundsReport(), "attack": AttackReport()}


def report_for(subcommand: str) -> Report:
    """The report of a subcommand (the generic :class:`Report` for any other name)."""
    return _REPORTS.get(subcommand, Report())


def write_reports(
    info: RunInfo, results: Mapping[str, Tensor], summary: Mapping[str, float]
) -> tuple[dict[str, Path], list[str]]:
    """Write every report of ``info.subcommand``; returns the files and the console summary lines.

    Args:
        info: the run (identity, selection, options, counts).
        results: ``{column: Tensor[N]}`` in selection order (``RunStore.load``).
        summary: the evaluator's ``summarize(results)``.
    """
    if any(len(v) != len(info.selection) for v in results.values()):
        raise ValueError("every result column must have one entry per selected sample")
    report = report_for(info.subcommand)
    files = report.write(info, results, summary)
    return files, report.lines(info, results, summary)
