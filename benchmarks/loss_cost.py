"""Cost of one training step of each robust objective, as a ratio to StandardLoss in the same run.

    .venv/bin/python benchmarks/loss_cost.py            # SmallCNN/digits + resnet18 at 32×32
    .venv/bin/python benchmarks/loss_cost.py --quick    # fewer inner steps and repetitions

For every objective the script reports

- ``measured_ratio``: median time of (zero_grad, loss, backward, optimizer step) divided by the
  median time of the same step with StandardLoss (interleaved repetitions, same model and batch);
- ``inherent_ratio``: the number of forward+backward passes over a batch of B the algorithm
  needs (a forward-only pass counts ½, a double backward counts 2, K·B or 2B rows count K or 2);
- ``overhead = measured_ratio / inherent_ratio`` (target ≤ 1.25: no wasted passes).

The inner loops are shortened (``--steps``) so that the whole run stays short; the inherent
count uses the same settings, so the ratio of the two is what matters. JSON goes to
``benchmarks/results/loss_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robustattr.losses import (
    ARTLoss,
    IGNormLoss,
    IGRLoss,
    PGDAdversarialLoss,
    SSRLoss,
    StandardLoss,
    TRADESLoss,
)


def objectives(S: int, m: int, approx: int, m_in: int, K: int) -> dict[str, tuple[object, float]]:
    """``name -> (loss, inherent pass count)`` for inner steps S, IG points m (outer) / m_in (inner)."""
    n = m // approx
    return {
        "pgd": (PGDAdversarialLoss(eps=0.3, step_size=0.3 / S, steps=S), S + 1.0),
        "trades": (TRADESLoss(eps=0.3, step_size=0.3 / S, steps=S), S + 0.5 + 2.0),
        "ignorm": (IGNormLoss(steps=S, step_size=0.3 / S, ig_steps=m, approx=approx), 2.0 * S * n + 2.0 * m + 1.0),
        "igsumnorm": (IGNormLoss(sum_norm=True, steps=S, step_size=0.3 / S, ig_steps=m, approx=approx), S * (2.0 * n + 1.0) + 2.0 * m + 1.0),
        "art": (ARTLoss(steps=3), 2.0 + 3 * 4.0 + 8.0),
        "igr": (IGRLoss(steps=S, step_size=0.3 / S, ig_steps=m, inner_ig_steps=m_in), m_in + 2.0 * S * m_in + 4.0 * m + 1.0),
        "trades_igr": (IGRLoss(base="trades", steps=S, step_size=0.3 / S, ig_steps=m), S + 0.5 + 2.0 + 4.0 * m),
        "ssr": (SSRLoss(), 2.0 * K + 1.0),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_timer(model: nn.Module, loss: object, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def run() -> float:
        _sync(x.device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss(model, x, y).loss.backward()  # type: ignore[operator]
        opt.step()
        _sync(x.device)
        return time.perf_counter() - t0

    return run


def bench(model: nn.Module, x: torch.Tensor, y: torch.Tensor, S: int, m: int, approx: int, m_in: int, reps: int) -> dict:
    model.train()
    std = step_timer(model, StandardLoss(), x, y)
    results = {}
    std_times: list[float] = []
    for name, (loss, inherent) in objectives(S, m, approx, m_in, 10).items():
        run = step_timer(model, loss, x, y)
        run(), std()  # warm-up
        t_obj, t_std = [], []
        for _ in range(reps):  # interleaved so that machine load affects both alike
            t_std.append(std())
            t_obj.append(run())
        std_times += t_std
        measured = statistics.median(t_obj) / statistics.median(t_std)
        results[name] = {
            "measured_ratio": round(measured, 3),
            "inherent_ratio": inherent,
            "overhead": round(measured / inherent, 3),
            "step_s": round(statistics.median(t_obj), 5),
            "loss": repr(loss),
        }
        print(f"  {name:11s} measured {measured:8.2f}  inherent {inherent:7.1f}  overhead {measured / inherent:5.2f}", flush=True)
    return {"standard_step_s": round(statistics.median(std_times), 5), "objectives": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 inner steps, 3 repetitions, smaller resnet batch")
    p.add_argument("--steps", type=int, default=None, help="inner steps S of every objective (default 10, quick 3)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--batch", type=int, default=64, help="SmallCNN batch")
    p.add_argument("--resnet-batch", type=int, default=None)
    p.add_argument("--no-resnet", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss_cost.json"))
    a = p.parse_args()
    S = a.steps or (3 if a.quick else 10)
    reps = a.reps or (3 if a.quick else 5)
    m, approx, m_in = 10, 5, 5
    device = torch.device(a.device)
    torch.manual_seed(0)

    from robustattr.data.digits import load_digits_tensors
    from robustattr.models import SmallCNN, TimmBackbone, build_model

    out: dict = {
        "settings": {"inner_steps": S, "ig_steps": m, "approx": approx, "inner_ig_steps": m_in, "art_steps": 3, "reps": reps,
                     "quick": a.quick, "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cpu": platform.processor() or platform.machine(),
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "pass_counting": "forward+backward over a batch of B = 1; forward only = 0.5; double backward = 2; K·B rows = K",
    }
    xd, yd = load_digits_tensors(28)
    x, y = xd[: a.batch].to(device), yd[: a.batch].to(device)
    print(f"SmallCNN / digits 28x28, batch {a.batch}, {device}")
    model = build_model(SmallCNN(), (0.3,), (0.3,)).to(device)
    out["smallcnn_digits"] = {"batch": a.batch, **bench(model, x, y, S, m, approx, m_in, reps)}
    if not a.no_resnet:
        rb = a.resnet_batch or (8 if a.quick else 16)
        print(f"resnet18 (CIFAR stem) 32x32, batch {rb}, {device}")
        g = torch.Generator().manual_seed(0)
        xr = torch.rand(rb, 3, 32, 32, generator=g).to(device)
        yr = torch.randint(0, 10, (rb,), generator=g).to(device)
        net = build_model(TimmBackbone("resnet18", num_classes=10, in_channels=3, pretrained=False, cifar_stem=True), (0.5,) * 3, (0.25,) * 3)
        out["resnet18_32"] = {"batch": rb, **bench(net.to(device), xr, yr, S, m, approx, m_in, reps)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
