"""Run an application on the processes an existing launcher started (torchrun, SLURM's srun).

``certify.py`` is started once per process by the launcher and joins the process group the
launcher describes; there is no process pool or socket protocol of our own:

- **torchrun** (``torch.distributed.run``, single or multi node): detected by
  Lightning's :class:`~lightning.fabric.plugins.environments.TorchElasticEnvironment`;
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` come from torchrun.
- **SLURM** (``srun``, one task per GPU): detected as Lightning's
  :class:`~lightning.fabric.plugins.environments.SLURMEnvironment` does (``SLURM_NTASKS`` set
  and the job not named ``bash`` or ``interactive``); rank, world size and local rank are
  ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``; ``MASTER_ADDR`` defaults to the
  first host of ``SLURM_JOB_NODELIST`` and ``MASTER_PORT`` to ``15000 +`` the last four digits
  of ``SLURM_JOB_ID`` (Lightning's rule, so training and certification agree).
- an already initialised ``torch.distributed`` process group (a Python caller's) is used as is.
- otherwise: one process, nothing is initialised.

With more than one process the default group is initialised with ``init_method="env://"``,
backend ``nccl`` when the process's device is a CUDA device and ``gloo`` otherwise. The group
carries only small control messages (errors, the work plan) before the work starts; results
travel through the run store's files, so ranks never wait for each other inside the work loop.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DistContext",
    "SharedError",
    "init_distributed",
    "launch_environment",
    "launcher_rank",
    "resolve_device",
]

#: Timeout of the process group's collectives (only used before the work starts).
DEFAULT_TIMEOUT = _dt.timedelta(minutes=30)


class SharedError(ValueError):
    """An error every rank raises because one rank failed: printed once, by rank 0."""


@dataclass
class DistContext:
    """Where this process stands in a (possibly one-process) run.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU for ``--device cuda``).
        launcher: ``torchrun``, ``slurm``, ``initialized`` (an existing process group) or ``none``.
        backend: the process group's backend (``gloo``/``nccl``), ``None`` for one process.
        owns_group: this context initialised the process group and destroys it in :meth:`close`.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        """Rank 0: writes ``run.json``, the merged reports and the W&B run, prints the summary."""
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def agree(self, error: BaseException | None) -> None:
        """Collective: raise on every rank if any rank failed (call on all ranks, even without error).

        The failing rank raises its own ``error``; the others raise :class:`SharedError` naming
        the first failing rank and its message. A non-zero rank whose error says the same as
        rank 0's raises :class:`SharedError` too (so the message is printed once).
        """
        msgs = self.gather(None if error is None else _one_line(error))
        failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
        if not failed:
            return
        if error is not None:
            if self.rank != 0 and msgs[0] == msgs[self.rank]:
                raise SharedError(msgs[self.rank]) from error
            raise error
        r, m = failed[0]
        raise SharedError(m if self.world_size == 1 else f"rank {r}: {m}")

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def launch_environment() -> tuple[str, int, int, int]:
    """``(launcher, rank, world_size, local_rank)`` from the environment (see the module docstring).

    Raises:
        ValueError: a launcher variable that is not an integer, or a rank outside the world.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return "initialized", dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0)
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        launcher, names = "torchrun", ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif SLURMEnvironment.detect():
        launcher, names = "slurm", ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    else:
        return "none", 0, 1, 0
    rank, world, local = (_env_int(n, 0 if n != names[1] else 1) for n in names)
    if not 0 <= rank < world or local < 0:
        raise ValueError(f"{launcher}: rank {rank} (local {local}) is not in a world of {world} processes")
    return launcher, rank, world, local


def launcher_rank() -> int:
    """This process's global rank as the launcher set it (0 without a launcher or if unreadable)."""
    try:
        return launch_environment()[1]
    except ValueError:
        return 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def resolve_device(device: str, local_rank: int) -> str:
    """``cuda`` (no index) means ``cuda:<local_rank>``: one GPU per process; anything else is kept."""
    return f"cuda:{local_rank}" if device.strip() == "cuda" else device


def _slurm_main_address() -> tuple[str, int]:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    addr = os.environ.get("MASTER_ADDR") or SLURMEnvironment.resolve_root_node_address(
        os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "127.0.0.1"
    )
    port = os.environ.get("MASTER_PORT")
    if not port:
        job = os.environ.get("SLURM_JOB_ID", "")
        port = str(int(job[-4:]) + 15000) if job[-4:].isdigit() else "12910"
    return addr, _port(port)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError(f"MASTER_PORT must be a port number, got {text!r}")
    return port


def init_distributed(device: torch.device, timeout: _dt.timedelta = DEFAULT_TIMEOUT) -> DistContext:
    """Join the launcher's process group (or none for one process); see the module docstring.

    Args:
        device: this process's device (``nccl`` for CUDA devices, else ``gloo``; a CUDA device
            becomes the current one before the group is created).
        timeout: timeout of the group's collectives.

    Returns:
        The :class:`DistContext`; call :meth:`DistContext.close` at the end.

    Raises:
        ValueError: unreadable launcher variables.
    """
    launcher, rank, world, local = launch_environment()
    if launcher == "initialized":
        import torch.distributed as dist

        return DistContext(rank, world, local, launcher, str(dist.get_backend()), owns_group=False)
    if world == 1:
        return DistContext(rank, world, local, launcher)
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if launcher == "slurm":
        addr, port = _slurm_main_address()
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    return DistContext(rank, world, local, launcher, backend, owns_group=True)

