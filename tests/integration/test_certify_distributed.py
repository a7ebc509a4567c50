"""certify.py on several CPU processes (gloo): torchrun and an emulated srun give one process's report exactly.

Every multi-process launch is a subprocess with OMP_NUM_THREADS=1 (float32 kernels round
differently with other thread counts) and the venv's interpreter (``sys.executable -m
torch.distributed.run``). The one-process reference and the one-process reruns call
``certify.py``'s ``main`` in this process with one torch thread (the same code without a
launcher; it saves a process start-up each). Compared: the merged TSV's result columns
(every cell as text, the timing column left out), the summary, and every index exactly once
over the shards. Also: SIGKILL of one rank then a one-process rerun, a rank dying under a
launcher that does not stop the others (rank 0 says so), a shard of another run refused,
``--merge_only`` rebuilding the same report, one W&B run from rank 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robustattr.apps.certify import main, select_indices
from tests.apps import conftest as apps_conftest
from tests.apps.conftest import REPO
from tests.wandb_offline import find_offline_runs, read_offline_run

pytestmark = [pytest.mark.slow, pytest.mark.ddp]
#: the tiny digits checkpoint written by train.py's CLI (the fixture of the application tests)
digits_checkpoint = apps_conftest.digits_checkpoint

N_VAL = 270
ATTACK_YAML = """\
attacks:
  topk:
    class_path: robustattr.attacks.TopKAttack
    init_args: {attribution: {class_path: robustattr.attributions.Saliency}, eps: 0.3, steps: 3, step_size: 0.1, k: 50}
metrics: [topk, lens_topk, spearman, cosine]
"""
#: (samples, evaluator options): smoothing heavy enough (N = 2000) that a rank can be killed mid-run
SETTINGS: dict[str, tuple[int, tuple[str, ...]]] = {
    "smoothing": (16, ("--radius", "0.3", "--n_samples", "2000", "--eps_grid", "[0.0001,0.001,0.01]",
                       "--taus", "[0.5,0.9]", "--seed", "5")),
    "bounds": (11, ("--eps", "0.05", "--iters", "5", "--attack_repeats", "1", "--attack_steps", "2")),
    "attack": (11, ()),
}
REPORT = {"smoothing": "certify.tsv", "bounds": "bounds.tsv", "attack": "attack.tsv"}
BATCH = 2


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "MASTER_"))}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        env.pop(k, None)
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline",
               WANDB_SILENT="true", WANDB_DIR=str(tmp / "wandb"), **extra)
    (tmp / "wandb").mkdir(exist_ok=True)
    return env


def _args(sub: str, ckpt: Path, out: Path, tmp: Path, *extra: str) -> list[str]:
    n, opts = SETTINGS[sub]
    if sub == "attack":
        (tmp / "attack.yaml").write_text(ATTACK_YAML)
        opts = ("--config", str(tmp / "attack.yaml"))
    return [sub, "--checkpoint", str(ckpt), "--output", str(out), "--num_samples", str(n),
            "--batch_size", str(BATCH), *opts, *extra]


def _cmd(nproc: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node <nproc> certify.py``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(REPO / "certify.py")]


def _launch(nproc: int, args: list[str], tmp: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*_cmd(nproc), *args], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread, as ``OMP_NUM_THREADS=1`` gives the launched processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _in_process(args: list[str], tmp: Path) -> str:
    """``certify.py <args>`` as one process, in this one (one thread, offline W&B in ``tmp``); its stdout."""
    out = io.StringIO()
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp / "wandb")}
    (tmp / "wandb").mkdir(exist_ok=True)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with _one_thread(), contextlib.redirect_stdout(out):
            main(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out.getvalue()


def _lines(path: Path) -> list[list[str]]:
    """Complete lines (a torn last line left out), without a shard's identity line, split into cells."""
    text = path.read_text()
    text = text[: text.rfind("\n") + 1]
    return [ln.split("\t") for ln in text.splitlines() if not ln.startswith("#identity\t")]


def _results(path: Path) -> list[list[str]]:
    """Header and rows, in file order, without the timing column."""
    lines = _lines(path)
    keep = [k for k, c in enumerate(lines[0]) if c.rsplit("/", 1)[-1] != "seconds"]
    return [[r[k] for k in keep] for r in lines]


def _summary(out: Path) -> dict[str, object]:
    doc = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in doc["summary"].items() if "seconds" not in k}


def _shard_indices(out: Path) -> list[int]:
    return [int(r[0]) for p in sorted((out / "rows").glob("*.tsv")) for r in _lines(p)[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ref(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-process reference runs (no launcher, in this process), one output per subcommand, computed on first use."""
    tmp = tmp_path_factory.mktemp("ref")

    class _Refs(dict):  # type: ignore[type-arg]
        def __missing__(self, sub: str) -> Path:
            out = tmp / sub
            _in_process(_args(sub, digits_checkpoint, out, tmp, "--no_wandb", "--no_progress"), tmp)
            self[sub] = out
            return out

    return _Refs()


@pytest.mark.parametrize("sub", ["smoothing", "bounds", "attack"])
def test_two_torchrun_processes_equal_one_process_exactly(
    sub: str, ref: dict[str, Path], digits_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    wandb = sub == "smoothing"  # one W&B run, from rank 0 only (checked once: it costs seconds)
    res = _launch(2, _args(sub, digits_checkpoint, out, tmp_path, *(() if wandb else ("--no_wandb",))), tmp_path)
    n = SETTINGS[sub][0]
    sel = select_indices(N_VAL, n, None, 0)
    # same samples, same order, same values (every result cell as text), same summary
    assert _results(out / REPORT[sub]) == _results(ref[sub] / REPORT[sub])
    assert [int(r[0]) for r in _lines(out / REPORT[sub])[1:]] == sel
    assert _summary(out) == _summary(ref[sub])
    if sub == "smoothing":  # the compared cells include certified cosines, not only "not certified"
        head, *rows = _lines(out / REPORT[sub])
        assert any(r[head.index("cos@eps=0.0001")] != "not certified" for r in rows)
    # each sample evaluated by exactly one rank; both ranks worked (whole batches, dealt round robin)
    shards = {p.name: [int(r[0]) for r in _lines(p)[1:]] for p in (out / "rows").glob("*.tsv")}
    assert set(shards) == {"0.tsv", "1.tsv"} and all(shards.values())
    assert sorted(_shard_indices(out)) == sorted(sel)
    batches = [sel[k : k + BATCH] for k in range(0, n, BATCH)]
    assert shards["0.tsv"] == [i for b in batches[0::2] for i in b]
    assert shards["1.tsv"] == [i for b in batches[1::2] for i in b]
    # the summary printed once (rank 0), the progress bar counting every rank's samples
    assert res.stdout.count("results in") == 1 and "evaluated by 2 processes (torchrun)" in res.stdout
    assert f"{n}/{n}" in res.stderr
    doc = json.loads((out / "summary.json").read_text())
    assert doc["options"]["world_size"] == 2 and doc["counts"]["evaluated"] == n
    runs = find_offline_runs(tmp_path / "wandb")
    if not wandb:
        assert runs == []
        return
    assert len(runs) == 1, runs  # rank 0 only
    rec = read_offline_run(runs[0])
    assert {"per_sample", "cos_vs_eps_table", "frac_certified_vs_eps_table", "plots/cos_vs_eps"} <= rec.history_keys
    assert rec.config["options.world_size"] == 2 and rec.config["evaluator.radius"] == 0.3
    assert rec.config["evaluator.n_samples"] == 2000 and rec.config["counts.selected"] == n
    assert rec.summary["cos_median@eps=0.0001"] == doc["summary"]["cos_median@eps=0.0001"]
    assert rec.summary["per_sample/nrows"] == n


def _wait_for_rows(proc: subprocess.Popen[str], shard: Path, rows: int, timeout: float = 600) -> int:
    """Wait until ``shard`` holds ``rows`` rows; returns the pid of its writer (from its lock file)."""
    deadline = time.time() + timeout
    while not (shard.exists() and shard.read_text().count("\n") >= 2 + rows):  # identity, header, rows
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.communicate()[1][-3000:]}")
        assert time.time() < deadline, f"{shard} got no row within {timeout} s"
        time.sleep(0.05)
    return int(json.loads(shard.with_suffix(".lock").read_text())["pid"])


def test_sigkill_one_rank_then_one_process_finishes_with_the_same_report(
    ref: dict[str, Path], digits_checkpoint: Path, tmp_path: Path
) -> None:
    """kill -9 rank 1 under torchrun (which then stops rank 0); one process resumes: the same report."""
    out = tmp_path / "run"
    args = _args("smoothing", digits_checkpoint, out, tmp_path, "--no_wandb", "--no_progress")
    proc = subprocess.Popen([*_cmd(2), *args], cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pid = _wait_for_rows(proc, out / "rows" / "1.tsv", BATCH)
        os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    n = SETTINGS["smoothing"][0]
    before = _shard_indices(out)
    assert 0 < len(before) < n, "the run must be interrupted mid-way"
    # make one finished batch partial: its other member is redone inside the same batch
    shard1 = out / "rows" / "1.tsv"
    text = shard1.read_text()
    dropped = int(text.splitlines()[-1].split("\t")[0])
    shard1.write_text(text[: text.rstrip("\n").rfind("\n") + 1])
    printed = _in_process(args, tmp_path)
    assert f"resumed: {len(before) - 1} of {n}" in printed
    doc = json.loads((out / "summary.json").read_text())
    assert doc["counts"]["recomputed"] >= 1 and doc["options"]["world_size"] == 1
    assert _results(out / "certify.tsv") == _results(ref["smoothing"] / "certify.tsv")
    assert _summary(out) == _summary(ref["smoothing"])
    idx = _shard_indices(out)
    assert sorted(idx) == select_indices(N_VAL, n, None, 0)  # no row lost, none duplicated
    assert dropped in idx and len(set(idx)) == len(idx)


def _fake_srun(tmp: Path) -> Path:
    """A stand-in for ``srun``: SLURM_NTASKS copies of the command with SLURM_PROCID/SLURM_LOCALID set.

    Like srun without ``--kill-on-bad-exit`` it lets the other tasks run when one dies.
    """
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text(
        "#!/usr/bin/env bash\n"
        'while [[ $# -gt 0 && "$1" == -* ]]; do shift; done\n'
        "pids=()\n"
        'for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@" & pids+=($!); done\n'
        'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc\n'
    )
    srun.chmod(0o755)
    return bin_dir


def test_slurm_tasks_dead_rank_reported_then_rerun_equals_one_process(
    ref: dict[str, Path], digits_checkpoint: Path, tmp_path: Path
) -> None:
    """docker/slurm_certify.sbatch with an emulated srun (2 tasks, gloo): a killed task is reported by
    rank 0 after its own work; one process (e.g. on the login node) resumes: the one-process report."""
    out = tmp_path / "run"
    bin_dir = _fake_srun(tmp_path)
    env = _env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2",
               SLURM_JOB_ID="4242", SLURM_JOB_NAME="certify", SLURM_CPUS_PER_TASK="1", DEVICE="cpu",
               MASTER_PORT=str(_free_port()), PYTHON=sys.executable, CERTIFY_PY=str(REPO / "certify.py"))
    cmd = ["bash", str(REPO / "docker" / "slurm_certify.sbatch"),
           *_args("smoothing", digits_checkpoint, out, tmp_path, "--no_wandb", "--no_progress")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = _wait_for_rows(proc, out / "rows" / "1.tsv", BATCH)
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    n = SETTINGS["smoothing"][0]
    share0 = len(select_indices(N_VAL, n, None, 0)) // 2
    assert proc.returncode != 0
    msg = [ln for ln in err.splitlines() if ln.startswith("certify.py: error: ")]
    assert len(msg) == 1 and "rank 1 stopped after" in msg[0] and "rerun the same command" in msg[0], err[-3000:]
    assert len(_lines(out / "rows" / "0.tsv")) - 1 == share0  # rank 0 finished its own share first
    assert not (out / "certify.tsv").exists()
    before = len(_shard_indices(out))
    printed = _in_process(cmd[2:], tmp_path)
    assert f"resumed: {before} of {n}" in printed and printed.count("results in") == 1
    assert _results(out / "certify.tsv") == _results(ref["smoothing"] / "certify.tsv")
    assert sorted(_shard_indices(out)) == select_indices(N_VAL, n, None, 0)


def test_foreign_shard_is_refused_and_merge_only_rebuilds_the_same_report(
    ref: dict[str, Path], tmp_path: Path, digits_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(ref["smoothing"], out)
    for p in out.rglob("*.lock"):
        p.unlink()
    args = _args("smoothing", digits_checkpoint, out, tmp_path, "--no_wandb", "--no_progress")
    # --merge_only: delete every report, rebuild it from the shards without evaluating
    reports = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix in (".tsv", ".png", ".json")}
    for name in reports:
        if name != "run.json":
            (out / name).unlink()
    main([*args, "--merge_only"])
    printed = capsys.readouterr().out
    assert f"merged: {SETTINGS['smoothing'][0]} samples from 1 shard" in printed
    assert (out / "certify.tsv").read_bytes() == reports["certify.tsv"]
    assert _summary(out) == _summary(ref["smoothing"])
    assert (out / "cos_vs_eps.png").is_file() and (out / "frac_certified_vs_eps.png").is_file()
    assert json.loads((out / "summary.json").read_text())["counts"]["evaluated"] == 0
    assert sorted(p.name for p in (out / "rows").glob("*.tsv")) == ["0.tsv"]  # nothing evaluated or written
    # a shard of another run (another subcommand's, with its own identity) is refused, by both
    (out / "rows" / "1.tsv").write_bytes((ref["bounds"] / "rows" / "0.tsv").read_bytes())
    for extra in ((), ("--merge_only",)):
        with pytest.raises(SystemExit) as exc:
            main([*args, *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("certify.py: error: ")
        assert "rows/1.tsv" in err and "shard of another run" in err and "subcommand bounds ≠ smoothing" in err, err
    (out / "rows" / "1.tsv").unlink()
    # --merge_only with a missing row says to evaluate
    shard = out / "rows" / "0.tsv"
    shard.write_text(shard.read_text().rsplit("\n", 2)[0] + "\n")
    with pytest.raises(SystemExit):
        main([*args, "--merge_only"])
    assert "run without --merge_only" in capsys.readouterr().err
