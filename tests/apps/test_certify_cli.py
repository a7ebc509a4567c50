"""certify.py end to end with the real evaluators (smoothing, bounds, attack) on a tiny digits checkpoint.

Report files and values against the certifier, resume after SIGKILL equal to an uninterrupted run
for every subcommand, identity refusal naming the changed option, one-line errors naming the
evaluator's option, attribution chosen by class name, warnings before the work.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustattr.apps.certify import cli, main, select_indices
from robustattr.apps.reports import NOT_CERTIFIED
from robustattr.certify import UniformSmoothingCertifier
from tests.apps.conftest import CONFIG, REPO

SMOOTHING = ("--radius", "0.3", "--n_samples", "20", "--eps_grid", "[0.0001,0.001,0.01]", "--taus", "[0.5,0.9]", "--seed", "5")
BOUNDS = ("--eps", "0.05", "--iters", "5", "--attack_repeats", "1", "--attack_steps", "2")
ATTACK_YAML = """\
attacks:
  topk:
    class_path: robustattr.attacks.TopKAttack
    init_args: {attribution: {class_path: robustattr.attributions.Saliency}, eps: 0.3, steps: 3, step_size: 0.1, k: 50}
metrics: [topk, lens_topk, spearman, cosine]
"""
SETTINGS = {"smoothing": SMOOTHING + ("--n_samples", "400"), "bounds": BOUNDS, "attack": ()}
REPORT = {"smoothing": "certify.tsv", "bounds": "bounds.tsv", "attack": "attack.tsv"}


def _args(sub: str, ckpt: Path, out: Path, n: int, *extra: str) -> list[str]:
    return [sub, "--checkpoint", str(ckpt), "--output", str(out), "--num_samples", str(n), "--batch_size", "2",
            "--no_progress", "--no_wandb", *extra]


def _table(path: Path) -> list[dict[str, str]]:
    """Rows of a report or of a shard (whose first line, the run identity, is left out)."""
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if not ln.startswith("#identity\t")]
    return [dict(zip(lines[0], r, strict=True)) for r in lines[1:]]


def _results(path: Path) -> list[dict[str, str]]:
    """Rows without the timing column, sorted by index."""
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in _table(path)]
    return sorted(rows, key=lambda r: int(r["index"]))


def _extra(sub: str, tmp_path: Path) -> tuple[str, ...]:
    if sub != "attack":
        return SETTINGS[sub]
    (tmp_path / "attack.yaml").write_text(ATTACK_YAML)
    return ("--config", str(tmp_path / "attack.yaml"))


def test_smoothing_report_files_and_values(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    res = cli(_args("smoothing", digits_checkpoint, out, 6, *SMOOTHING, "--bound", "paper"))
    printed = capsys.readouterr()
    for name in ("certify.tsv", "summary.json", "cos_vs_eps.png", "frac_certified_vs_eps.png", "run.json"):
        assert (out / name).is_file(), name
    assert (out / "cos_vs_eps.png").read_bytes()[:4] == b"\x89PNG"
    rows = _table(out / "certify.tsv")
    assert len(rows) == 6 and len({r["index"] for r in rows}) == 6
    assert "UNSOUND_paper_cos@eps=0.001" in rows[0]
    js = json.loads((out / "summary.json").read_text())
    assert js["counts"]["selected"] == 6 and js["parameters"]["radius"] == 0.3 and js["parameters"]["n_samples"] == 20
    assert set(js["summary"]) == set(res["summary"])
    # recompute two rows directly with the certifier on the loaded model (one sample at a time, other rows per forward)
    from robustattr.checkpoint import load_classifier

    module, dm = load_classifier(digits_checkpoint)
    ds = dm.split("val")
    cert = UniformSmoothingCertifier(radius=0.3, n_samples=20, eps_grid=[1e-4, 1e-3, 1e-2], taus=[0.5, 0.9], seed=5, batch_size=11)
    for r in rows[:2]:
        i = int(r["index"])
        x, label = ds[i]
        c = cert.certify(module.model, x.unsqueeze(0), index=torch.tensor([i]))
        assert int(r["label"]) == int(label) and int(r["prediction"]) == int(c.y[0])
        assert float(r["h_norm"]) == pytest.approx(float(c.h_norm[0]), rel=1e-6)
        for j, e in enumerate(["0.0001", "0.001", "0.01"]):
            v = float(c.cos_lower[0, j])
            assert r[f"cos@eps={e}"] == NOT_CERTIFIED if math.isnan(v) else float(r[f"cos@eps={e}"]) == pytest.approx(v, rel=1e-6)
    # N = 20 gives t > 1 = M: nothing is certified, and the report says so in words, never a number
    assert all(r["cos@eps=0.001"] == NOT_CERTIFIED for r in rows)
    assert js["summary"]["cos_median@eps=0.001"] == NOT_CERTIFIED
    assert "median certified cosine not certified" in printed.out and "certified 0/6" in printed.out
    # ... and a warning said so before the work started
    assert "warning:" in printed.err and "nothing can be certified" in printed.err


@pytest.mark.slow
@pytest.mark.parametrize("sub", ["smoothing", "bounds", "attack"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    sub: str, digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 certify.py mid-run, tear the last line, rerun: every index exactly once, the same values."""
    out, ref = tmp_path / "run", tmp_path / "ref"
    n = 8
    args = _args(sub, digits_checkpoint, out, n, *_extra(sub, tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "certify.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = out / "rows" / "0.tsv"
    deadline = time.time() + 400
    try:
        while not (rows.exists() and rows.read_text().count("\n") >= 2 + 2):  # identity, header + one batch
            if proc.poll() is not None:
                pytest.fail(f"certify.py ended early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            assert time.time() < deadline, "no row within 400 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    before = rows.read_text()
    done = before.count("\n") - 2
    assert 2 <= done < n, "the run must be interrupted mid-way"
    with open(rows, "a") as f:
        f.write("999\t3\t3\t0.5")  # a torn last line, as from a kill during a write
    res = cli(args)
    assert res["counts"] == {"selected": n, "resumed": done, "evaluated": n - done, "recomputed": 0}
    assert rows.read_text().startswith(before)  # nothing rewritten
    idx = [int(r["index"]) for r in _table(rows)]
    assert sorted(idx) == select_indices(270, n, None, 0) and len(set(idx)) == n and 999 not in idx
    cli(_args(sub, digits_checkpoint, ref, n, *_extra(sub, tmp_path)))  # uninterrupted
    assert _results(out / REPORT[sub]) == _results(ref / REPORT[sub])  # exact text of every result cell
    s_out, s_ref = (json.loads((d / "summary.json").read_text())["summary"] for d in (out, ref))
    assert {k: v for k, v in s_out.items() if "seconds" not in k} == {k: v for k, v in s_ref.items() if "seconds" not in k}
    printed = capsys.readouterr().out
    assert f"results in {ref}" in printed
    if sub == "smoothing":  # some samples are certified at N = 400, for the comparison to mean something
        assert any(r["cos@eps=0.0001"] != NOT_CERTIFIED for r in _table(out / "certify.tsv"))
    if sub == "bounds":
        assert "skipped" in printed and "outside T_e" in printed
    if sub == "attack":
        assert "topk: attacked" in printed and "success rate" in printed


def test_changed_parameter_is_refused_naming_it(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    cli(_args("smoothing", digits_checkpoint, out, 2, *SMOOTHING))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*_args("smoothing", digits_checkpoint, out, 2, *SMOOTHING), "--radius", "0.5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "radius 0.3 ≠ 0.5" in err


def test_architecture_mismatch_is_clear(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # configs/model/smallcnn.yaml has width 32; the checkpoint was trained with width 8
    with pytest.raises(SystemExit) as exc:
        main([*_args("smoothing", digits_checkpoint, tmp_path / "x", 2), "--experiment", str(CONFIG)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "another architecture" in err


BAD = [
    ("smoothing", ("--radius", "0"), "radius"),
    ("smoothing", ("--alpha", "1.5"), "alpha"),
    ("smoothing", ("--taus", "[0.5,1]"), "taus"),
    ("smoothing", ("--eps_grid", "[-0.001]"), "eps"),
    ("smoothing", ("--n_samples", "0"), "n_samples"),
    ("smoothing", ("--rows_per_forward", "0"), "rows_per_forward"),
    ("smoothing", ("--bounding", "sqrt"), "bounding"),
    ("smoothing", ("--attribution", "IntegratedGradients", "--attribution.steps", "0"), "steps"),
    ("smoothing", ("--attribution", "NoSuchAttribution"), "--attribution"),
    ("bounds", ("--norms", "[l3]"), "norms"),
    ("bounds", ("--eps", "-1"), "eps"),
    ("attack", ("--explain", "nothing"), "explain"),
    ("attack", ("--metrics", "[no_such_metric]"), "no_such_metric"),
]


@pytest.mark.parametrize(("sub", "extra", "name"), BAD, ids=[f"{b[0]}{b[1][0]}" for b in BAD])
def test_invalid_evaluator_options_are_one_line_naming_the_option(
    sub: str, extra: tuple[str, ...], name: str, digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(_args(sub, digits_checkpoint, tmp_path / "bad", 2, *extra))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("certify.py: error: ") and name in err, err
    assert not (tmp_path / "bad").exists()


def test_attribution_by_class_name(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ig"
    cli(_args("smoothing", digits_checkpoint, out, 2, *SMOOTHING, "--attribution", "IntegratedGradients", "--attribution.steps", "2"))
    attr = json.loads((out / "run.json").read_text())["evaluator"]["attribution"]
    assert attr["class"].endswith("IntegratedGradients") and attr["steps"] == 2


def test_help_shows_the_evaluators_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for sub, option, default in [("smoothing", "--radius", "0.25"), ("smoothing", "--n_samples", "1000"),
                                 ("bounds", "--attack_repeats", "5"), ("attack", "--explain", "pred")]:
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert exc.value.code == 0 and f"default: {default}" in text.split(option + " ", 2)[-1][:600], (sub, option)
