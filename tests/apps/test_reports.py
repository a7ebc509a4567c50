"""Reports from per-sample columns: certified quantiles, 'not certified' cells, plots that show it, atomic files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustattr.apps.reports import (
    NOT_CERTIFIED,
    RunInfo,
    certified_quantile,
    report_for,
    write_reports,
)

EPS = [1e-4, 1e-3, 1e-2]
TAUS = [0.5, 0.9]


def _info(tmp_path: Path, sub: str, n: int) -> RunInfo:
    identity = {"checkpoint_sha256": "ab" * 32, "subcommand": sub, "split": "val",
                "evaluator": {"class": "x.SmoothingEvaluator", "radius": 0.25, "n_samples": 1000, "alpha": 0.001,
                              "attribution": {"class": "robustattr.attributions.saliency.Saliency"},
                              "eps_grid": EPS, "taus": TAUS}}
    return RunInfo(sub, tmp_path, identity, list(range(100, 100 + n)), {"split": "val"}, {"selected": n})


def _smoothing(n: int = 8) -> dict[str, torch.Tensor]:
    """Sample k is certified at ε_j iff k + j < n - 1 (more samples lose the certificate as ε grows)."""
    cos = torch.full((n, len(EPS)), float("nan"), dtype=torch.float64)
    for k in range(n):
        for j in range(len(EPS)):
            if k + 2 * j < n - 2:
                cos[k, j] = 0.999 - 0.01 * k - 0.05 * j
    res = {"label": torch.arange(n) % 10, "prediction": torch.arange(n) % 10, "h_norm": torch.linspace(0.5, 0.9, n, dtype=torch.float64)}
    res["h_norm"][0] = float("nan")  # a non-certificate column keeps 'nan'
    res.update({f"cos@eps={e:g}": cos[:, j] for j, e in enumerate(EPS)})
    res.update({f"eps_max@tau={t:g}": torch.where(cos[:, 0] >= t, 1e-3, float("nan")).double() for t in TAUS})
    res["seconds"] = torch.ones(n, dtype=torch.float64)
    return res


def test_certified_quantile_is_numpys_inverted_cdf_with_not_certified_lowest() -> None:
    g = np.random.default_rng(0)
    for n in (1, 2, 7, 8, 40):
        v = g.uniform(-1, 1, size=(n, 5))
        v[g.uniform(size=v.shape) < 0.4] = np.nan
        for q in (0.25, 0.5, 0.75, 1.0):
            got = certified_quantile(v, q)
            want = np.quantile(np.nan_to_num(v, nan=-np.inf), q, axis=0, method="inverted_cdf")
            assert np.array_equal(np.isnan(got), ~np.isfinite(want))
            assert np.array_equal(got[~np.isnan(got)], want[np.isfinite(want)])
            for j in range(5):  # at least N - ceil(qN) + 1 samples are certified with at least this value
                if not np.isnan(got[j]):
                    assert (np.nan_to_num(v[:, j], nan=-np.inf) >= got[j]).sum() >= n - math.ceil(q * n) + 1


def test_smoothing_report_files_cells_and_summary(tmp_path: Path) -> None:
    res = _smoothing()
    summary = {"cos_median@eps=0.01": float("nan"), "cos_median@eps=0.0001": 0.96, "accuracy": 1.0, "h_norm_median": float("nan")}
    files, lines = write_reports(_info(tmp_path, "smoothing", 8), res, summary)
    assert {p.name for p in files.values()} == {"certify.tsv", "cos_vs_eps.png", "frac_certified_vs_eps.png", "summary.json"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in files.values() if p.suffix == ".png")
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]
    rows = [ln.split("\t") for ln in (tmp_path / "certify.tsv").read_text().splitlines()]
    head, body = rows[0], rows[1:]
    assert head == ["index", *res] and [r[0] for r in body] == [str(i) for i in range(100, 108)]
    for c in [c for c in res if c.startswith(("cos@", "eps_max@"))]:
        k = head.index(c)
        for b, r in enumerate(body):
            v = float(res[c][b])
            assert r[k] == (NOT_CERTIFIED if math.isnan(v) else repr(v))
    assert body[0][head.index("h_norm")] == "nan"
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["summary"] == {"cos_median@eps=0.01": NOT_CERTIFIED, "cos_median@eps=0.0001": 0.96, "accuracy": 1.0, "h_norm_median": None}
    assert doc["indices"] == list(range(100, 108)) and doc["identity"]["split"] == "val" and doc["parameters"]["radius"] == 0.25
    assert {"python", "torch", "robustattr"} <= set(doc["versions"])
    # console: per ε, k/N certified and per τ, and the median certified cosine (or 'not certified')
    cos = np.stack([res[f"cos@eps={e:g}"].numpy() for e in EPS], 1)
    for j, e in enumerate(EPS):
        line = next(ln for ln in lines if ln.strip().startswith(f"ε = {e:g}:"))
        assert f"certified {int(np.isfinite(cos[:, j]).sum())}/8" in line
        for t in TAUS:
            assert f"≥ {t:g}: {int((np.nan_to_num(cos[:, j], nan=-2) >= t).sum())}/8" in line
        med = summary.get(f"cos_median@eps={e:g}", certified_quantile(cos, 0.5)[j])  # the evaluator's if given
        assert line.endswith(NOT_CERTIFIED if math.isnan(med) else f"{med:.4f}")


def test_smoothing_plots_show_not_certified_samples_as_such(tmp_path: Path) -> None:
    res = _smoothing()
    figs = report_for("smoothing").figures(_info(tmp_path, "smoothing", 8), res)
    top, bottom = figs["cos_vs_eps.png"].axes
    median = next(ln for ln in top.lines if ln.get_label() == "median sample")
    want = certified_quantile(np.stack([res[f"cos@eps={e:g}"].numpy() for e in EPS], 1), 0.5)
    y = np.asarray(median.get_ydata(), dtype=float)
    assert np.array_equal(np.isnan(y), np.isnan(want)) and np.allclose(y[~np.isnan(y)], want[~np.isnan(want)])
    assert not np.any(y <= -1.0)  # never drawn as cosine −1
    marks = next(ln for ln in top.lines if ln.get_label() == "median sample not certified")
    assert list(marks.get_xdata()) == [e for e, m in zip(EPS, want, strict=True) if math.isnan(m)]
    assert top.get_ylim()[0] > 0.5  # the axis shows certified values, not a drop to −1
    frac = np.asarray(bottom.lines[0].get_ydata(), dtype=float)
    assert np.allclose(frac, [np.isfinite(res[f"cos@eps={e:g}"].numpy()).mean() for e in EPS])
    title = top.get_title()
    assert "radius=0.25" in title and "n_samples=1000" in title and "attribution=Saliency" in title and "8 samples" in title
    ax = figs["frac_certified_vs_eps.png"].axes[0]
    styles = {(ln.get_marker(), ln.get_linestyle(), ln.get_markersize()) for ln in ax.lines}
    assert len(ax.lines) == len(TAUS) == len(styles)  # overlapping τ lines stay distinguishable
    assert "radius=0.25" in ax.get_title()


def test_nothing_certified_plots_and_says_so(tmp_path: Path) -> None:
    res = _smoothing()
    for e in EPS:
        res[f"cos@eps={e:g}"] = torch.full((8,), float("nan"), dtype=torch.float64)
    files, lines = write_reports(_info(tmp_path, "smoothing", 8), res, {})
    assert all(f"median certified cosine {NOT_CERTIFIED}" in ln for ln in lines if ln.strip().startswith("ε"))
    assert files["cos_vs_eps"].stat().st_size > 1000


def test_bounds_report(tmp_path: Path) -> None:
    n = 6
    te = torch.full((n,), 1.0, dtype=torch.float64)
    res = {"xi_max": te * 10, "g_norm": te, "T_e": te, "T_e_prime": te * 1.2, "c": te, "T_c_deg": te, "vacuous": torch.zeros(n, dtype=torch.bool),
           "dist_mean": te * 0.5, "dist_max": torch.tensor([0.5, 1.1, 1.3, 0.9, 9.0, 0.2], dtype=torch.float64),
           "skipped": torch.tensor([False, False, False, False, True, False])}
    info = _info(tmp_path, "bounds", n)
    info.identity["evaluator"]["norms"] = ["linf"]  # one norm: no column prefix, named from the parameters
    files, lines = write_reports(info, res, {"n": 5.0, "n_skipped": 1.0})
    text = "\n".join(lines)
    assert "  linf: median T_e 1, median T'_e 1.2" in text
    assert "attacked 5/6; skipped 1 (misclassified" in text
    assert "outside T_e: 2/5" in text and "outside T'_e: 1/5" in text  # 9.0 is skipped: not counted
    assert f"largest relative excess over T'_e {1.3 / 1.2 - 1:.3g}" in text
    assert (tmp_path / "bounds.tsv").is_file() and files["bounds_hist"].stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["summary"] == {"n": 5.0, "n_skipped": 1.0}


def test_attack_report(tmp_path: Path) -> None:
    n = 5
    res = {"topk/success": torch.tensor([True, False, True, True, False]), "topk/skipped": torch.tensor([False, False, False, False, True]),
           "topk/criterion": torch.rand(n), "topk/topk": torch.rand(n), "topk/spearman": torch.rand(n)}
    files, lines = write_reports(_info(tmp_path, "attack", n), res, {"topk/success_rate": 0.75, "topk/topk": 0.4, "topk/spearman": 0.8})
    assert "topk: attacked 4/5 (skipped: misclassified), success rate 0.75; means: topk 0.4, spearman 0.8" in "\n".join(lines)
    fig = report_for("attack").figures(_info(tmp_path, "attack", n), res)["attack_topk.png"]
    assert [ax.get_xlabel() for ax in fig.axes if ax.axison] == ["topk", "spearman"]
    assert files["attack_topk"].read_bytes()[:4] == b"\x89PNG"


def test_generic_report_for_other_evaluators(tmp_path: Path) -> None:
    files, lines = write_reports(_info(tmp_path, "fake", 2), {"v": torch.tensor([1.5, float("nan")])}, {"m": 1.5})
    assert (tmp_path / "fake.tsv").read_text() == "index\tv\n100\t1.5\n101\tnan\n"
    assert set(files) == {"tsv", "summary"} and lines == ["fake: 2 samples", "  m: 1.5"]
    with pytest.raises(ValueError, match="one entry per selected sample"):
        write_reports(_info(tmp_path, "fake", 3), {"v": torch.tensor([1.5])}, {})
