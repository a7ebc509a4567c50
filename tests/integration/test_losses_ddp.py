"""DDP correctness of every robust objective: 2 gloo processes (each half the batch) must give the
same parameter gradients as one process on the full batch.

The loss runs the way Lightning runs it: the forward (here the whole objective, including
its input-gradients computed with ``autograd.grad(create_graph=True)``) happens inside a
``DistributedDataParallel`` wrapper, followed by one ordinary ``.backward()``. DDP only
all-reduces first-order parameter gradients as they are accumulated, so this test is the
proof that the double-backward objectives are DDP-safe. Random starts use ``noise_seed``
(per-sample noise keyed by the sample's pixels), so both runs see the same noise. Float64
and SmallCNN (no BatchNorm) make per-sample means exactly decomposable.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

TOL = 1e-5


def _losses() -> dict[str, object]:
    from robustattr.losses import (
        ARTLoss,
        IGNormLoss,
        IGRLoss,
        IGSumNormLoss,
        PGDAdversarialLoss,
        SSRLoss,
        StandardLoss,
        TRADESIGRLoss,
        TRADESLoss,
    )

    s = 11
    return {
        "standard": StandardLoss(),
        "pgd_linf": PGDAdversarialLoss(eps=0.2, step_size=0.05, steps=2, noise_seed=s),
        "pgd_l2": PGDAdversarialLoss(eps=1.0, step_size=0.3, steps=2, norm="l2", noise_seed=s),
        "trades": TRADESLoss(beta=3.0, eps=0.2, step_size=0.05, steps=2, noise_seed=s),
        "ignorm": IGNormLoss(lam=1.0, eps=0.2, step_size=0.05, steps=1, ig_steps=4, approx=2, noise_seed=s),
        "igsumnorm": IGSumNormLoss(beta=0.5, eps=0.2, step_size=0.05, steps=1, ig_steps=4, approx=2, noise_seed=s),
        "art": ARTLoss(eps=0.1, step_size=0.05, steps=1, random_start=True, noise_seed=s),
        "igr": IGRLoss(lam=1.0, eps=0.2, step_size=0.05, steps=1, ig_steps=3, inner_ig_steps=2, noise_seed=s),
        "trades_igr": TRADESIGRLoss(lam=1.0, eps=0.2, step_size=0.05, steps=1, ig_steps=3, noise_seed=s),
        "ssr": SSRLoss(beta=0.3, scale=15.0),
    }


class _LossModule(nn.Module):
    """What Lightning's DDP wrapper does: forward = training_step = ``loss(self.model, x, y).loss``."""

    def __init__(self, model: nn.Module, loss: object) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self.model, x, y).loss  # type: ignore[operator]


def _setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from robustattr.data.digits import load_digits_tensors
    from robustattr.models import SmallCNN, build_model

    torch.manual_seed(0)
    model = build_model(SmallCNN(width=4, hidden=16), (0.3,), (0.3,)).double().train()
    x, y = load_digits_tensors(28)
    return model, x[:8].double(), y[:8]


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        base, x, y = _setup()
        half = x.shape[0] // world
        sl = slice(rank * half, (rank + 1) * half)
        diffs: dict[str, float] = {}
        for name, loss in _losses().items():
            ref = copy.deepcopy(base)
            loss(ref, x, y).loss.backward()  # single process, full batch
            g_ref = _grads(ref)
            wrapped = _LossModule(copy.deepcopy(base), loss)
            ddp = torch.nn.parallel.DistributedDataParallel(wrapped)
            ddp(x[sl], y[sl]).backward()  # forward inside DDP, one ordinary backward (all-reduce mean)
            g_ddp = _grads(wrapped.model)
            diffs[name] = max(float((a - b).abs().max()) for a, b in zip(g_ref, g_ddp, strict=True))
            diffs[name + "/scale"] = max(float(a.abs().max()) for a in g_ref)
        torch.save(diffs, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process_for_every_objective(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    names = list(_losses())
    for rank in range(2):
        diffs = torch.load(tmp_path / f"rank{rank}.pt")
        for name in names:
            assert diffs[name + "/scale"] > 0, name  # gradients are not trivially zero
            assert diffs[name] <= TOL, (rank, name, diffs[name])


def test_every_exported_objective_is_covered_by_the_ddp_test() -> None:
    import robustattr.losses as losses

    covered = {type(v).__name__ for v in _losses().values()}
    exported = {n for n in losses.__all__ if n not in ("LossOutput", "RobustLoss")}
    assert exported <= covered, exported - covered
