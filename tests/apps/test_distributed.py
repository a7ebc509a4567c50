"""Launcher detection (torchrun, SLURM, none), the SLURM rendezvous defaults, devices per local rank,
and error agreement on one process. The multi-process runs are in tests/integration/test_certify_distributed.py."""

from __future__ import annotations

import pytest

from robustattr.apps import distributed
from robustattr.apps.distributed import (
    DistContext,
    SharedError,
    launch_environment,
    launcher_rank,
    resolve_device,
)

LAUNCHER_VARS = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_NAME", "SLURM_JOB_ID",
                 "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_NTASKS_PER_NODE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in LAUNCHER_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_no_launcher_is_one_process(clean_env: pytest.MonkeyPatch) -> None:
    assert launch_environment() == ("none", 0, 1, 0) and launcher_rank() == 0


def test_torchrun_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TORCHELASTIC_RUN_ID", "abc")
    clean_env.setenv("RANK", "5")
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("SLURM_NTASKS", "32")  # torchrun inside a SLURM allocation: torchrun wins
    assert launch_environment() == ("torchrun", 5, 8, 1) and launcher_rank() == 5


def test_slurm_environment_and_rendezvous_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLURM_NTASKS", "32")
    clean_env.setenv("SLURM_PROCID", "17")
    clean_env.setenv("SLURM_LOCALID", "1")
    clean_env.setenv("SLURM_JOB_NAME", "certify")
    clean_env.setenv("SLURM_JOB_ID", "1234567")
    clean_env.setenv("SLURM_JOB_NODELIST", "gpu[012-015]")
    assert launch_environment() == ("slurm", 17, 32, 1)
    assert distributed._slurm_main_address() == ("gpu012", 15000 + 4567)  # first node, Lightning's port rule
    clean_env.setenv("MASTER_ADDR", "head")
    clean_env.setenv("MASTER_PORT", "29400")
    assert distributed._slurm_main_address() == ("head", 29400)
    clean_env.setenv("MASTER_PORT", "http")
    with pytest.raises(ValueError, match="MASTER_PORT must be a port number"):
        distributed._slurm_main_address()
    clean_env.setenv("SLURM_JOB_NAME", "interactive")  # an interactive allocation is not a launcher (as in Lightning)
    assert launch_environment() == ("none", 0, 1, 0)


def test_bad_launcher_variables_are_one_line_errors(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TORCHELASTIC_RUN_ID", "abc")
    clean_env.setenv("RANK", "x")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK must be an integer, got 'x'"):
        launch_environment()
    assert launcher_rank() == 0
    clean_env.setenv("RANK", "2")
    with pytest.raises(ValueError, match="rank 2 .* is not in a world of 2 processes"):
        launch_environment()


def test_cuda_means_the_local_rank_gpu() -> None:
    assert resolve_device("cuda", 3) == "cuda:3" and resolve_device("cuda", 0) == "cuda:0"
    assert resolve_device("cuda:1", 3) == "cuda:1" and resolve_device("cpu", 3) == "cpu"


def test_one_process_context(clean_env: pytest.MonkeyPatch) -> None:
    import torch

    ctx = distributed.init_distributed(torch.device("cpu"))
    assert ctx == DistContext() and not ctx.distributed and ctx.is_primary
    assert ctx.gather(3) == [3] and ctx.broadcast("x") == "x"
    ctx.agree(None)
    err = ValueError("boom")
    with pytest.raises(ValueError, match="boom") as exc:
        ctx.agree(err)
    assert exc.value is err and not isinstance(exc.value, SharedError)
    ctx.close()
