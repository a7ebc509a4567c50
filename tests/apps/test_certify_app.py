"""certify.py's application layer over any evaluator (here a fake one) and a real tiny checkpoint.

Run store through the CLI, identity refusal, resume after SIGKILL equal to an uninterrupted run,
a concurrent writer refused, atomic reports, one-line errors with exit status 2, --help /
--print_config / --config. The real evaluators are exercised end to end in test_certify_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from robustattr.apps import certify
from robustattr.apps.certify import cli, default_output, select_indices
from robustattr.apps.store import sha256_file
from tests.apps.conftest import CONFIG, REPO
from tests.apps.fakes import SUBS, FakeEvaluator, fake_main

N_VAL = 270  # samples in the digits validation split (checked below)


def test_digits_val_split_size() -> None:
    from robustattr.data import DigitsDataModule

    assert len(DigitsDataModule().split("val")) == N_VAL


def _args(ckpt: Path, out: Path | None, n: int = 6, *extra: str) -> list[str]:
    args = ["fake", "--checkpoint", str(ckpt), "--num_samples", str(n), "--no_progress", "--no_wandb", *extra]
    return args + (["--output", str(out)] if out is not None else [])


def _lines(path: Path) -> list[str]:
    """Header and rows of a report or a shard (a shard's first line, its identity, left out)."""
    lines = path.read_text().splitlines()
    return lines[1:] if lines and lines[0].startswith("#identity\t") else lines


def _rows(path: Path) -> list[list[str]]:
    return [ln.split("\t") for ln in _lines(path)[1:]]


def _result_cells(path: Path) -> dict[str, list[str]]:
    """index → cells of every result column (the timing column 'seconds' left out)."""
    lines = [ln.split("\t") for ln in _lines(path)]
    keep = [k for k, c in enumerate(lines[0]) if c != "seconds"]
    return {r[0]: [r[k] for k in keep] for r in lines[1:]}


def _temps(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".tmp." in p.name]


def test_run_writes_rows_and_reports_with_the_evaluators_values(
    digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    res = cli(_args(digits_checkpoint, out, 6), SUBS)
    printed = capsys.readouterr().out
    assert "fake: 6 samples" in printed and f"results in {out}" in printed and "accuracy" in printed
    assert {p.name for p in out.iterdir()} == {"run.json", "run.lock", "rows", "fake.tsv", "summary.json"}
    assert not _temps(out)
    ident = json.loads((out / "run.json").read_text())
    assert ident["checkpoint_sha256"] == sha256_file(digits_checkpoint) and ident["subcommand"] == "fake"
    assert ident["split"] == "val" and ident["evaluator"] == {"class": "tests.apps.fakes.FakeEvaluator", "scale": 1.0, "seed": 0}
    # the rows are exactly what the evaluator returns for these samples, evaluated here directly in the
    # same batches of 2 (float32 kernels round differently for other batch sizes: 1e-6 relative for one batch)
    from robustattr.checkpoint import load_classifier

    module, dm = load_classifier(digits_checkpoint)
    ds = dm.split("val")
    sel = select_indices(len(ds), 6, None, 0)
    x = torch.stack([ds[i][0] for i in sel])
    y = torch.tensor([int(ds[i][1]) for i in sel])
    parts = [FakeEvaluator().evaluate(module.model, x[s : s + 2], y[s : s + 2], torch.tensor(sel[s : s + 2])) for s in (0, 2, 4)]
    ref = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    whole = FakeEvaluator().evaluate(module.model, x, y, torch.tensor(sel))
    rows = _rows(out / "rows" / "0.tsv")
    assert [int(r[0]) for r in rows] == sel
    assert [int(r[1]) for r in rows] == y.tolist() and [int(r[2]) for r in rows] == ref["prediction"].tolist()
    assert [float(r[3]) for r in rows] == ref["logit"].double().tolist()  # exact
    assert [float(r[3]) for r in rows] == pytest.approx(whole["logit"].double().tolist(), rel=1e-6, abs=1e-9)
    assert [r[6] for r in rows] == ["nan" if i % 3 == 0 else repr(float(ref["noise"][b])) for b, i in enumerate(sel)]
    assert _rows(out / "fake.tsv") == rows  # merged report = the rows of the selection
    doc = json.loads((out / "summary.json").read_text())
    assert doc["summary"] == {k: (None if v != v else v) for k, v in res["summary"].items()}  # NaN → null
    assert doc["counts"] == {"selected": 6, "resumed": 0, "evaluated": 6, "recomputed": 0} and doc["indices"] == sel
    assert doc["identity"] == ident and doc["options"]["batch_size"] == 2


def test_default_output_is_per_subcommand_and_checkpoint(
    digits_checkpoint: Path, other_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    a = cli(_args(digits_checkpoint, None, 2), SUBS)["output"]
    b = cli(_args(other_checkpoint, None, 2), SUBS)["output"]  # no refusal: another folder
    assert a == default_output("fake", sha256_file(digits_checkpoint)) == Path("outputs/certify/fake") / sha256_file(digits_checkpoint)[:12]
    assert b != a and (tmp_path / b / "fake.tsv").is_file()


def test_second_checkpoint_or_changed_parameter_is_refused(
    digits_checkpoint: Path, other_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    cli(_args(digits_checkpoint, out, 2), SUBS)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"}
    capsys.readouterr()
    for extra, what in [
        ((), "checkpoint sha256"),
        (("--scale", "2"), "scale 1.0 ≠ 2.0"),
        (("--split", "test"), "split val ≠ test"),
    ]:
        ckpt = other_checkpoint if not extra else digits_checkpoint
        with pytest.raises(SystemExit) as exc:
            fake_main(_args(ckpt, out, 2, *extra))
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("certify.py: error: ")
        assert what in err and "use a new --output" in err, err
    sha_a, sha_b = sha256_file(digits_checkpoint), sha256_file(other_checkpoint)
    fake_main_err = f"checkpoint sha256 {sha_a[:8]}… ≠ {sha_b[:8]}…"
    with pytest.raises(SystemExit):
        fake_main(_args(other_checkpoint, out, 2))
    assert fake_main_err in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"} == before


def test_more_samples_extend_the_run_and_the_report_covers_the_selection(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cli(_args(digits_checkpoint, out, 4), SUBS)
    calls: list[list[int]] = []
    real = FakeEvaluator.evaluate
    monkeypatch.setattr(FakeEvaluator, "evaluate", lambda self, m, x, y, i: calls.append(i.tolist()) or real(self, m, x, y, i))
    res = cli(_args(digits_checkpoint, out, 8), SUBS)
    first4 = select_indices(N_VAL, 4, None, 0)
    assert set(first4) < set(select_indices(N_VAL, 8, None, 0))  # a prefix of the same permutation
    sel8 = select_indices(N_VAL, 8, None, 0)
    # batches of 2 over the whole selection of 8; those holding a new sample are evaluated whole
    batches = [sel8[k : k + 2] for k in range(0, 8, 2)]
    redo = [b for b in batches if set(b) - set(first4)]
    assert calls == redo
    recomputed = sum(len(set(b) & set(first4)) for b in redo)
    assert res["counts"] == {"selected": 8, "resumed": 4, "evaluated": 4, "recomputed": recomputed}
    assert sorted(int(r[0]) for r in _rows(out / "rows" / "0.tsv")) == sel8  # each sample once: recomputed rows are not stored
    calls.clear()
    res = cli(_args(digits_checkpoint, out, 4), SUBS)  # a smaller selection: nothing to do, report of 4
    assert calls == [] and res["counts"]["evaluated"] == 0
    assert [int(r[0]) for r in _rows(out / "fake.tsv")] == first4
    assert len(_rows(out / "rows" / "0.tsv")) == 8
    res = cli([*_args(digits_checkpoint, out, 4), "--indices", "5,3,0"], SUBS)  # explicit indices, in that order
    assert [int(r[0]) for r in _rows(out / "fake.tsv")] == [5, 3, 0] and res["counts"]["selected"] == 3


def test_sigkill_mid_run_resume_equals_uninterrupted_and_concurrent_writer_refused(
    digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 a run after a few rows; meanwhile a second writer is refused; the resumed run equals an uninterrupted one."""
    out, ref = tmp_path / "run", tmp_path / "ref"
    n = 12
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "tests.apps.fakes", *_args(digits_checkpoint, out, n, "--delay", "4")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = out / "rows" / "0.tsv"
    try:
        deadline = time.time() + 300
        while not (rows.exists() and rows.read_text().count("\n") >= 2 + 2):  # identity, header + one batch of 2
            if proc.poll() is not None:
                pytest.fail(f"the run ended early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            assert time.time() < deadline, "no row within 300 s"
            time.sleep(0.05)
        # a second writer while the first holds the lock: refused in one line naming its pid
        with pytest.raises(SystemExit) as exc:
            fake_main(_args(digits_checkpoint, out, n, "--delay", "4"))
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and f"pid {proc.pid} " in err and "in use by another run" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    before = rows.read_text()
    done = len(_rows(rows))
    assert 2 <= done < n, "the run must be interrupted mid-way"
    with open(rows, "a") as f:
        f.write("999\t3\t3\t0.5")  # and a torn last line, as from a kill during a write
    res = cli(_args(digits_checkpoint, out, n, "--progress"), SUBS)
    bar = capsys.readouterr().err
    assert f"{done}/{n}" in bar and "sample" in bar  # the bar counts samples and starts at the finished ones
    assert res["counts"] == {"selected": n, "resumed": done, "evaluated": n - done, "recomputed": 0}
    after = rows.read_text()
    assert after.startswith(before)  # nothing rewritten
    idx = [int(r[0]) for r in _rows(rows)]
    assert sorted(idx) == select_indices(N_VAL, n, None, 0) and len(set(idx)) == n and 999 not in idx
    cli(_args(digits_checkpoint, ref, n), SUBS)  # uninterrupted
    assert _result_cells(out / "fake.tsv") == _result_cells(ref / "fake.tsv")
    assert _result_cells(out / "rows" / "0.tsv") == _result_cells(ref / "rows" / "0.tsv")
    s_out, s_ref = (json.loads((d / "summary.json").read_text())["summary"] for d in (out, ref))
    assert s_out == s_ref
    assert not _temps(out)


def test_kill_while_writing_the_summary_keeps_the_old_one(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cli(_args(digits_checkpoint, out, 2), SUBS)
    old = (out / "summary.json").read_text()
    real_replace = os.replace

    def dies_before_renaming_the_summary(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith("summary.json"):
            raise KeyboardInterrupt  # as if killed between writing the temp file and the rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_before_renaming_the_summary)
    with pytest.raises(KeyboardInterrupt):
        cli(_args(digits_checkpoint, out, 4), SUBS)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (out / "summary.json").read_text() == old  # the old summary, whole
    assert json.loads(old)["counts"]["selected"] == 2
    assert [p.name for p in _temps(out)] == [f".summary.json.tmp.{os.getpid()}"]
    cli(_args(digits_checkpoint, out, 4), SUBS)  # the next run cleans up and regenerates everything
    assert json.loads((out / "summary.json").read_text())["counts"]["selected"] == 4 and not _temps(out)


def _garbage(tmp: Path, digits_checkpoint: Path) -> dict[str, Path]:
    (tmp / "random.ckpt").write_bytes(os.urandom(4096))
    data = digits_checkpoint.read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    mnist = yaml.safe_load(CONFIG.read_text())  # group files are relative to configs/experiment: inline them
    mnist["model"] = {"backbone": {"class_path": "robustattr.models.SmallCNN", "init_args": {"width": 8, "hidden": 32}}}
    mnist["data"] = {"class_path": "robustattr.data.MNISTDataModule", "init_args": {"data_dir": str(tmp / "nodata"), "download": False}}
    (tmp / "mnist.yaml").write_text(yaml.safe_dump(mnist))
    return {"random": tmp / "random.ckpt", "truncated": tmp / "truncated.ckpt", "missing": tmp / "missing.ckpt",
            "mnist": tmp / "mnist.yaml"}


ERRORS = [
    ("random", (), "is not a PyTorch checkpoint"),
    ("truncated", (), "is a corrupt checkpoint"),
    ("missing", (), "checkpoint not found"),
    (None, ("--experiment", str(CONFIG)), "from another architecture"),
    (None, ("--device", "foo"), "invalid device 'foo'"),
    (None, ("--device", "cuda:0" if not torch.cuda.is_available() else "cuda:99"), "is not available"),
    (None, ("--indices", ""), "--indices: expected comma-separated integers, got ''"),
    (None, ("--indices", ","), "--indices: expected comma-separated integers, got ','"),
    (None, ("--indices", "1,x"), "--indices: expected comma-separated integers, got '1,x'"),
    (None, ("--indices", "100000"), "indices out of range [0, 270)"),
    (None, ("--indices", "1,1"), "indices contain duplicates"),
    (None, ("--batch_size", "0"), "batch_size must be >= 1, got 0"),
    (None, ("--num_samples", "0"), "num_samples must be >= 1, got 0"),
    (None, ("--scale", "-1"), "scale must be > 0, got -1.0"),  # the evaluator's own ValueError
    (None, ("--scale", "abc"), "--scale:"),
    (None, ("--split", "nope"), "--split"),
    (None, ("--bogus", "1"), "unrecognized arguments: --bogus"),
    (None, ("--experiment", "MNIST"), "config file not found"),
    ("mnist_data", (), "MNIST dataset not found"),
]


@pytest.mark.parametrize(("ckpt", "extra", "message"), ERRORS, ids=[e[2][:30] for e in ERRORS])
def test_errors_are_one_line_with_status_2(
    ckpt: str | None, extra: tuple[str, ...], message: str, digits_checkpoint: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = _garbage(tmp_path, digits_checkpoint)
    path = digits_checkpoint if ckpt in (None, "mnist_data") else files[ckpt]
    if ckpt == "mnist_data":
        extra = ("--experiment", str(files["mnist"]))
    with pytest.raises(SystemExit) as exc:
        fake_main(_args(path, tmp_path / "out", 2, *extra))
    out, err = capsys.readouterr()
    assert exc.value.code == 2
    assert err.count("\n") == 1 and err.startswith("certify.py: error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "rows").exists()


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [([], 'expected "subcommand"'), (["nope"], "invalid choice: 'nope'"), (["fake"], "required: --checkpoint")]:
        with pytest.raises(SystemExit) as exc:
            fake_main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_debug_shows_the_traceback(digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fake_main([*_args(digits_checkpoint, tmp_path / "o", 2, "--batch_size", "0"), "--debug"])
    monkeypatch.setenv("ROBUSTATTR_DEBUG", "1")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        fake_main(_args(digits_checkpoint, tmp_path / "o", 0))


def test_help_print_config_and_config_file(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        fake_main(["fake", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    for option, default in [("--scale", "1.0"), ("--seed", "0"), ("--batch_size", "2"), ("--num_samples", "100"),
                            ("--split", "val"), ("--device", "cpu"), ("--subset_seed", "0")]:
        assert option in text and f"default: {default}" in text.split(option, 2)[-1][:400], option
    assert "outputs/certify/fake/<checkpoint sha256[:12]>" in text and "--print_config" in text
    with pytest.raises(SystemExit) as exc:
        fake_main([*_args(digits_checkpoint, tmp_path / "run", 3, "--scale", "2.5"), "--print_config"])
    printed = capsys.readouterr().out
    assert exc.value.code == 0
    cfg = yaml.safe_load(printed)
    assert cfg["scale"] == 2.5 and cfg["num_samples"] == 3 and cfg["checkpoint"] == str(digits_checkpoint)
    (tmp_path / "opts.yaml").write_text(printed)
    res = cli(["fake", "--config", str(tmp_path / "opts.yaml")], SUBS)
    assert res["output"] == tmp_path / "run" and res["counts"]["selected"] == 3
    assert json.loads((tmp_path / "run" / "run.json").read_text())["evaluator"]["scale"] == 2.5


def test_warnings_are_printed_before_the_work(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(_args(digits_checkpoint, tmp_path / "o", 2, "--scale", "200"), SUBS)
    err = capsys.readouterr().err
    assert "certify.py: warning: scale 200 > 100 for inputs (1, 28, 28)" in err


def test_python_api_run(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = certify.run("fake", digits_checkpoint, tmp_path / "o", FakeEvaluator(scale=3.0), indices=[4, 2],
                      batch_size=5, progress=False, quiet=True)
    assert capsys.readouterr() == ("", "")
    assert res["counts"] == {"selected": 2, "resumed": 0, "evaluated": 2, "recomputed": 0}
    assert set(res["files"]) == {"tsv", "summary"}
    assert [r[0] for r in _rows(tmp_path / "o" / "fake.tsv")] == ["4", "2"]
    with pytest.raises(ValueError, match="indices must not be empty"):
        certify.run("fake", digits_checkpoint, tmp_path / "o", FakeEvaluator(scale=3.0), indices=[], quiet=True)
