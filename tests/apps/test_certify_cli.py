"""certify.py end to end: TSV/JSON/PNG report, values, interrupted-and-resumed run, errors, --mode bounds."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from robustattr.apps.certify import NOT_CERTIFIED, main
from robustattr.apps.train import build_cli
from robustattr.certify import UniformSmoothingCertifier

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "experiment" / "digits_smallcnn.yaml"
EPS = "0.0001,0.001,0.01"
TAUS = "0.5,0.9"


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SmallCNN (width 8) trained for 3 batches by train.py's CLI; its checkpoint."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cli = build_cli(
        [
            "fit", "--config", str(CONFIG), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
            "--trainer.limit_val_batches", "1", "--model.backbone.init_args.width", "8", "--model.backbone.init_args.hidden", "32",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp),
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp),
        ]
    )
    return Path(cli.trainer.checkpoint_callback.best_model_path)


def _args(ckpt: Path, out: Path, n: int = 6, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "--checkpoint", str(ckpt), "--output", str(out), "--num-samples", str(n), "--radius", "0.3", "--n-samples", "24",
        "--eps", EPS, "--taus", TAUS, "--batch-size", "2", "--seed", "5", "--no-progress", *extra,
    ]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "certify.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_report_files_and_values(demo_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    summary = main(_args(demo_checkpoint, out, extra=("--bound", "paper")))
    for name in ("certify.tsv", "summary.json", "cos_vs_eps.png", "frac_certified_vs_eps.png", "certify_config.json"):
        assert (out / name).is_file(), name
    assert (out / "cos_vs_eps.png").read_bytes()[:4] == b"\x89PNG"
    rows = _rows(out)
    assert len(rows) == 6 and len({r["idx"] for r in rows}) == 6
    assert "UNSOUND_paper_cos@eps=0.001" in rows[0]
    js = json.loads((out / "summary.json").read_text())
    assert js["num_samples"] == 6 and js == {**summary, "files": js["files"]}

    # recompute two rows directly with the certifier on the loaded model (independent of the CLI's batching)
    from robustattr.checkpoint import load_classifier

    module, dm = load_classifier(demo_checkpoint)
    dm.setup()
    cert = UniformSmoothingCertifier(radius=0.3, n_samples=24, eps_grid=[1e-4, 1e-3, 1e-2], taus=[0.5, 0.9], seed=5, batch_size=11)
    for r in rows[:2]:
        i = int(r["idx"])
        x, label = dm.val_set[i]
        c = cert.certify(module.model, x.unsqueeze(0), index=torch.tensor([i]))
        assert int(r["label"]) == int(label) and int(r["prediction"]) == int(c.y[0])
        assert float(r["h_norm"]) == pytest.approx(float(c.h_norm[0]), rel=1e-6)
        for j, e in enumerate(["0.0001", "0.001", "0.01"]):
            v = float(c.cos_lower[0, j])
            assert r[f"cos@eps={e}"] == NOT_CERTIFIED if math.isnan(v) else float(r[f"cos@eps={e}"]) == pytest.approx(v, rel=1e-6)
    # N = 24 gives t > 1: nothing is certified, and the report says so in words, never a number
    assert all(r["cos@eps=0.001"] == NOT_CERTIFIED for r in rows)
    assert js["per_eps"][0]["cos_q50"] == NOT_CERTIFIED


@pytest.mark.slow
def test_interrupted_and_resumed(demo_checkpoint: Path, tmp_path: Path) -> None:
    """Kill certify.py mid-run (SIGKILL), tear the last line, re-run: every index exactly once, same values."""
    out, ref = tmp_path / "run", tmp_path / "ref"
    n = 10
    args = _args(demo_checkpoint, out, n=n, extra=("--n-samples", "400"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "certify.py"), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tsv = out / "certify.tsv"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if tsv.exists() and tsv.read_text().count("\n") >= 1 + 2:  # header + ≥ 2 rows
                break
            if proc.poll() is not None:
                pytest.fail(f"certify.py ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = _rows(out)
    assert 2 <= len(before) < n, "the run must be interrupted mid-way"
    with open(tsv, "a") as f:
        f.write("999\t3\t3\t0.5")  # a torn last line, as from a kill during a write
    main(args)
    after = _rows(out)
    idx = [int(r["idx"]) for r in after]
    assert len(idx) == n and len(set(idx)) == n and 999 not in idx
    assert after[: len(before)] == before  # nothing rewritten
    # equals an uninterrupted run
    main(_args(demo_checkpoint, ref, n=n, extra=("--n-samples", "400")))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert sorted(strip(after), key=lambda r: int(r["idx"])) == sorted(strip(_rows(ref)), key=lambda r: int(r["idx"]))
    # some samples are certified at N = 400 for the report to be meaningful
    assert any(r["cos@eps=0.0001"] != NOT_CERTIFIED for r in after)


def test_resume_refuses_other_parameters(demo_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    main(_args(demo_checkpoint, out, n=2))
    with pytest.raises(SystemExit, match="radius"):
        main([*_args(demo_checkpoint, out, n=2), "--radius", "0.5"])


def test_architecture_mismatch_is_clear(demo_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # configs/model/smallcnn.yaml has width 32; the checkpoint was trained with width 8
    with pytest.raises(SystemExit):
        main([*_args(demo_checkpoint, tmp_path / "x", n=2), "--config", str(CONFIG)])
    assert "architecture mismatch" in capsys.readouterr().err


def test_invalid_arguments(demo_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value, name in [("--radius", "0", "radius"), ("--alpha", "1.5", "alpha"), ("--taus", "0.5,1", "taus"), ("--eps", "-1e-3", "eps"), ("--n-samples", "0", "n_samples")]:
        with pytest.raises(SystemExit):
            main([*_args(demo_checkpoint, tmp_path / "bad", n=2), flag, value])
        assert name in capsys.readouterr().err


def test_mode_bounds_dispatch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import robustattr.certify as pkg

    monkeypatch.delattr(pkg, "bounds_report", raising=False)  # even if another test imported the real one
    monkeypatch.setitem(sys.modules, "robustattr.apps.bounds_report", None)  # import fails
    with pytest.raises(SystemExit) as exc:
        main(["--mode", "bounds", "--checkpoint", "x.ckpt"])
    assert exc.value.code == 2 and "bounds_report" in capsys.readouterr().err
    seen: list[list[str]] = []
    fake = types.ModuleType("robustattr.apps.bounds_report")
    fake.main = lambda argv: seen.append(argv) or {"ok": True}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "robustattr.apps.bounds_report", fake)
    monkeypatch.setattr(pkg, "bounds_report", fake, raising=False)
    assert main(["--mode", "bounds", "--checkpoint", "x.ckpt", "--radius", "0.1"]) == {"ok": True}
    assert seen == [["--checkpoint", "x.ckpt", "--radius", "0.1"]]
