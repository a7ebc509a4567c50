"""The run store: exact round trip, identity refusal, torn lines, duplicates across writers, lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustattr.apps.store import (
    IDENTITY_TAG,
    LOCK_FILE,
    RUN_JSON,
    RunStore,
    RunStoreError,
    atomic_write,
    identity_difference,
    remove_temp_files,
)

REPO = Path(__file__).resolve().parents[2]
SHA_A, SHA_B = "3f2a" + "0" * 60, "9c1b" + "1" * 60
COLS = ["label", "value", "flag", "seconds"]


def _identity(sha: str = SHA_A, **params: object) -> dict:
    ev = {"class": "robustattr.evaluation.smoothing.SmoothingEvaluator", "radius": 0.25, "n_samples": 1000,
          "attribution": {"class": "robustattr.attributions.saliency.Saliency"}, **params}
    return {"checkpoint_sha256": sha, "subcommand": "smoothing", "split": "val", "evaluator": ev}


def _batch(idx: list[int], value: list[float], seconds: float = 0.1) -> dict[str, torch.Tensor]:
    return {
        "label": torch.tensor([i % 10 for i in idx]),
        "value": torch.tensor(value, dtype=torch.float64),
        "flag": torch.tensor([i % 2 == 0 for i in idx]),
        "seconds": torch.full((len(idx),), seconds, dtype=torch.float64),
    }


def test_values_round_trip_exactly(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    special = [float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1e-310, 1e300, 1 / 3, 2.0, -7.0]
    values = torch.cat([torch.tensor(special, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64) * 1e3])
    f32 = torch.randn(len(values), generator=g, dtype=torch.float32)
    idx = list(range(len(values)))
    with RunStore(tmp_path, _identity(), ["value", "f32", "label", "flag"]) as store:
        for s in range(0, len(idx), 7):  # several batches
            sl = slice(s, s + 7)
            store.append(idx[sl], {"value": values[sl], "f32": f32[sl], "label": torch.tensor(idx[sl]) - 20,
                                   "flag": torch.tensor(idx[sl]) % 3 == 0})
        back = store.load(idx)
    assert back["value"].dtype == torch.float64 and back["label"].dtype == torch.int64 and back["flag"].dtype == torch.bool
    same = (back["value"] == values) | (back["value"].isnan() & values.isnan())
    assert bool(same.all())
    assert torch.equal(torch.signbit(back["value"][~values.isnan()]), torch.signbit(values[~values.isnan()]))  # -0.0 kept
    assert torch.equal(back["f32"], f32.double()) and torch.equal(back["f32"].float(), f32)  # float32 exact
    assert back["label"].tolist() == [i - 20 for i in idx]
    assert back["flag"].tolist() == [i % 3 == 0 for i in idx]


def test_load_follows_the_selection_order_and_reports_missing_rows(tmp_path: Path) -> None:
    with RunStore(tmp_path, _identity(), COLS) as store:
        store.append([5, 2, 9], _batch([5, 2, 9], [0.5, 0.2, 0.9]))
        assert store.done() == {2, 5, 9}
        assert store.load([9, 2])["value"].tolist() == [0.9, 0.2]
        with pytest.raises(RunStoreError, match="1 selected samples have no row"):
            store.load([2, 3])


def test_another_checkpoint_or_parameter_is_refused_naming_what_differs(tmp_path: Path) -> None:
    with RunStore(tmp_path, _identity(), COLS) as store:
        store.append([1], _batch([1], [0.1]))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunStoreError) as err:
        RunStore(tmp_path, _identity(SHA_B, radius=0.5), COLS).open()
    msg = str(err.value)
    assert "\n" not in msg and "use a new --output" in msg
    assert "checkpoint sha256 3f2a0000… ≠ 9c1b1111…" in msg and "radius 0.25 ≠ 0.5" in msg
    assert "n_samples" not in msg  # only what differs
    nested = _identity(attribution={"class": "robustattr.attributions.integrated_gradients.IntegratedGradients", "steps": 32})
    with pytest.raises(RunStoreError, match=r"attribution Saliency ≠ IntegratedGradients; attribution.steps \(absent\) ≠ 32"):
        RunStore(tmp_path, nested, COLS).open()
    with pytest.raises(RunStoreError, match="split val ≠ test"):
        RunStore(tmp_path, {**_identity(), "split": "test"}, COLS).open()
    # nothing was changed by the refused runs, and the lock was released
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    with RunStore(tmp_path, _identity(), COLS) as store:
        assert store.done() == {1}


def test_identity_difference_is_json_normalised() -> None:
    a = json.loads(json.dumps(_identity(taus=(0.5, 0.9))))
    assert identity_difference(a, json.loads(json.dumps(_identity(taus=[0.5, 0.9])))) == []
    assert identity_difference({"evaluator": {"class": "a.B"}}, {"evaluator": {"class": "a.C"}}) == ["evaluator B ≠ C"]


def test_a_folder_holding_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "certify.tsv").write_text("idx\tlabel\n0\t1\n")  # an earlier version's output
    with pytest.raises(RunStoreError, match="holds no run.json"):
        RunStore(tmp_path, _identity(), COLS).open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunStore(empty, _identity(), COLS):
        pass
    assert json.loads((empty / RUN_JSON).read_text())["checkpoint_sha256"] == SHA_A


def test_torn_last_line_is_ignored_then_truncated(tmp_path: Path) -> None:
    with RunStore(tmp_path, _identity(), COLS) as store:
        store.append([1, 2], _batch([1, 2], [0.1, 0.2]))
    rows = tmp_path / "rows" / "0.tsv"
    good = rows.read_bytes()
    with open(rows, "ab") as f:
        f.write(b"3\t3\t0.3")  # a kill during a write
    reader = RunStore(tmp_path, _identity(), COLS, writer="1")  # another writer: reads, does not touch file 0
    reader.open()
    assert reader.done() == {1, 2}
    reader.close()
    assert rows.read_bytes() == good + b"3\t3\t0.3"
    with RunStore(tmp_path, _identity(), COLS) as store:  # writer 0 reopens its file: truncated
        assert rows.read_bytes() == good
        store.append([3], _batch([3], [0.3]))
        assert store.load([1, 2, 3])["value"].tolist() == [0.1, 0.2, 0.3]
    # a torn identity line or header (killed while creating the file) is rewritten
    preamble = store.preamble()
    assert preamble.decode().splitlines()[1] == "index\tlabel\tvalue\tflag\tseconds"
    for torn in (preamble[:20], preamble[: preamble.index(b"\n") + 8]):
        rows.write_bytes(torn)
        with RunStore(tmp_path, _identity(), COLS) as store:
            assert store.done() == set()
        assert rows.read_bytes() == preamble


def test_other_columns_and_malformed_rows_are_refused(tmp_path: Path) -> None:
    with RunStore(tmp_path, _identity(), COLS) as store:
        store.append([1], _batch([1], [0.1]))
    with pytest.raises(RunStoreError, match="other columns"):
        RunStore(tmp_path, _identity(), ["label", "value", "flag", "extra", "seconds"]).open()
    with open(tmp_path / "rows" / "0.tsv", "a") as f:
        f.write("2\t0.5\n")
    with pytest.raises(RunStoreError, match="line 4: malformed row"):
        RunStore(tmp_path, _identity(), COLS).open()


def test_duplicates_across_writers_identical_or_refused(tmp_path: Path) -> None:
    with RunStore(tmp_path, _identity(), COLS, writer="0") as s0:
        s0.append([1, 2], _batch([1, 2], [0.1, 0.2], seconds=1.0))
    with RunStore(tmp_path, _identity(), COLS, writer="1", primary=False) as s1:
        s1.append([2, 3], _batch([2, 3], [0.2, 0.3], seconds=9.0))  # index 2 again, other timing only
        assert s1.done() == {1, 2, 3}
        assert s1.load([3, 2, 1])["value"].tolist() == [0.3, 0.2, 0.1]
    with RunStore(tmp_path, _identity(), COLS, writer="2", primary=False) as s2:
        s2.append([3], _batch([3], [0.31]))
        with pytest.raises(RunStoreError, match=r"different results for index 3 \(column value: 0.3 ≠ 0.31\)"):
            s2.load([3])


def test_non_primary_writer_needs_the_identity(tmp_path: Path) -> None:
    with pytest.raises(RunStoreError, match="holds no run.json"):
        RunStore(tmp_path, _identity(), COLS, writer="1", primary=False).open()


def test_append_checks_columns_and_shapes(tmp_path: Path) -> None:
    with RunStore(tmp_path, _identity(), COLS) as store:
        with pytest.raises(ValueError, match=r"missing \['seconds'\], unexpected \['other'\]"):
            store.append([1], {**{k: v for k, v in _batch([1], [0.1]).items() if k != "seconds"}, "other": torch.zeros(1)})
        with pytest.raises(ValueError, match=r"column 'value' must have shape \[2\]"):
            store.append([1, 2], {**_batch([1, 2], [0.1, 0.2]), "value": torch.zeros(2, 1)})
        assert store.done() == set()
    with pytest.raises(ValueError, match="columns must be distinct"):
        RunStore(tmp_path, _identity(), ["a", "a"])
    with pytest.raises(ValueError, match="writer"):
        RunStore(tmp_path, _identity(), COLS, writer="../x")


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    first = RunStore(tmp_path, _identity(), COLS).open()
    try:
        with pytest.raises(RunStoreError) as err:
            RunStore(tmp_path, _identity(), COLS).open()
        assert f"pid {os.getpid()}" in str(err.value) and "in use by another run" in str(err.value)
    finally:
        first.close()
    with RunStore(tmp_path, _identity(), COLS):  # released
        pass


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    code = (
        "import sys, time; from robustattr.apps.store import RunStore\n"
        f"s = RunStore(sys.argv[1], {{'checkpoint_sha256': '{SHA_A}'}}, ['v']).open()\n"
        "print('locked', flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunStoreError, match=f"pid {proc.pid} "):
            RunStore(tmp_path, {"checkpoint_sha256": SHA_A}, ["v"]).open()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with RunStore(tmp_path, {"checkpoint_sha256": SHA_A}, ["v"]):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "summary.json"
    atomic_write(target, "old")
    import robustattr.apps.store as store_mod

    def killed(src: object, dst: object) -> None:  # the process dies after writing the temp file
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new " * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "summary.json"]
    assert leftovers == [f".summary.json.tmp.{os.getpid()}"]
    assert [p.name for p in remove_temp_files(tmp_path)] == leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_every_shard_carries_the_identity_and_a_foreign_shard_is_refused(tmp_path: Path) -> None:
    """A shard copied in from another run (another parameter) is refused naming the file and the difference."""
    run, other = tmp_path / "run", tmp_path / "other"
    with RunStore(run, _identity(), COLS) as s0:
        s0.append([1, 2], _batch([1, 2], [0.1, 0.2]))
    with RunStore(other, _identity(radius=0.5), COLS) as s1:
        s1.append([3], _batch([3], [0.3]))
    first = (run / "rows" / "0.tsv").read_text().splitlines()[0]
    assert first.startswith(IDENTITY_TAG + "\t") and json.loads(first.split("\t", 1)[1]) == json.loads((run / RUN_JSON).read_text())
    (run / "rows" / "7.tsv").write_bytes((other / "rows" / "0.tsv").read_bytes())  # e.g. collected from another node
    with pytest.raises(RunStoreError) as err:
        with RunStore(run, _identity(), COLS) as store:
            store.done()
    msg = str(err.value)
    assert "\n" not in msg and "rows/7.tsv" in msg and "shard of another run" in msg and "radius 0.5 ≠ 0.25" in msg, msg
    # the writer of that shard refuses it too, before touching it
    before = (run / "rows" / "7.tsv").read_bytes()
    with pytest.raises(RunStoreError, match="radius 0.5 ≠ 0.25"):
        RunStore(run, _identity(), COLS, writer="7", primary=False).open()
    assert (run / "rows" / "7.tsv").read_bytes() == before
    # a row file without an identity line (another version or program) is refused as well
    (run / "rows" / "7.tsv").write_text("index\tlabel\tvalue\tflag\tseconds\n3\t3\t0.3\ttrue\t0.1\n")
    with RunStore(run, _identity(), COLS) as store, pytest.raises(RunStoreError, match="carries no run identity"):
        store.done()
    (run / "rows" / "7.tsv").unlink()
    with RunStore(run, _identity(), COLS) as store:
        assert store.done() == {1, 2}


def test_reader_without_a_row_file_and_merge_without_a_run(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run", _identity(), COLS) as store:
        store.append([4], _batch([4], [0.4]))
    with RunStore(tmp_path / "run", _identity(), COLS, writer=None, create=False) as reader:
        assert reader.load([4])["value"].tolist() == [0.4]
        with pytest.raises(RuntimeError, match="not open for writing"):
            reader.append([5], _batch([5], [0.5]))
    assert sorted(p.name for p in (tmp_path / "run" / "rows").iterdir()) == ["0.lock", "0.tsv"]
    with pytest.raises(RunStoreError, match="holds no run"):
        RunStore(tmp_path / "empty", _identity(), COLS, writer=None, create=False).open()
    assert not (tmp_path / "empty" / RUN_JSON).exists()


def test_writer_active_follows_the_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time; from robustattr.apps.store import RunStore\n"
        f"s = RunStore(sys.argv[1], {{'checkpoint_sha256': '{SHA_A}'}}, ['v'], writer='3', primary=False).open()\n"
        "print('open', flush=True); time.sleep(600)\n"
    )
    with RunStore(tmp_path, {"checkpoint_sha256": SHA_A}, ["v"]) as primary:
        assert not primary.writer_active("3")  # no such writer yet
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
            assert primary.writer_active("3") and primary.writer_active("0")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert not primary.writer_active("3")  # released by the kernel
