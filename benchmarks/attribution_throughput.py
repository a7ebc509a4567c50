"""Attribution throughput: robustattr vs Captum in the same run, same settings.

Cases (issue 2): IntegratedGradients (m=50, right Riemann, zero baseline) and SmoothGrad
(n=50, σ=0.15, saliency base) on SmallCNN (1×28×28) and timm resnet18 with the CIFAR stem
(3×32×32), batch 64. Both libraries get the same chunk size: robustattr's
``internal_batch_size`` = Captum IG's ``internal_batch_size`` = ``chunk_steps · batch`` rows,
and NoiseTunnel's ``nt_samples_batch_size`` = ``chunk_steps`` (so ``chunk_steps · batch`` rows
per call). Timing: one warm-up call each, then ``repeats`` alternating calls; the best time
is kept (least disturbed by other processes). ``ratio`` = robustattr images/s ÷ Captum
images/s (> 1: robustattr faster). robustattr's result is also differentiable
(``create_graph=True``), which is not timed here (Captum does not offer it).

Usage: ``python benchmarks/attribution_throughput.py [--quick] [--device cpu|cuda]``
writes ``benchmarks/results/attribution_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from robustattr.attributions import IntegratedGradients, SmoothGrad
from robustattr.models import SmallCNN, TimmBackbone, build_model

OUT = Path(__file__).resolve().parent / "results" / "attribution_throughput.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Tensor], repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def make_model(name: str, device: torch.device) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if name == "smallcnn":
        return build_model(SmallCNN(), (0.1307,), (0.3081,)).to(device).eval(), (1, 28, 28)
    net = TimmBackbone("resnet18", num_classes=10, cifar_stem=True)
    return build_model(net, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)).to(device).eval(), (3, 32, 32)


def run_case(
    model_name: str, method: str, batch: int, steps: int, chunk_steps: int, repeats: int, device: torch.device
) -> dict[str, object]:
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import NoiseTunnel
    from captum.attr import Saliency as CaptumSaliency

    model, shape = make_model(model_name, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, *shape, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    rows = chunk_steps * batch
    ours_attr: IntegratedGradients | SmoothGrad
    if method == "ig":
        ours_attr = IntegratedGradients(steps=steps, method="riemann_right", internal_batch_size=rows)
        cap = CaptumIG(model)

        def ours() -> Tensor:
            return ours_attr(model, x, y)

        def captum() -> Tensor:
            return cap.attribute(x, baselines=0.0, target=y, n_steps=steps, method="riemann_right", internal_batch_size=rows)
    else:
        ours_attr = SmoothGrad(sigma=0.15, n_samples=steps, internal_batch_size=rows, seed=0)
        nt = NoiseTunnel(CaptumSaliency(model))

        def ours() -> Tensor:
            return ours_attr(model, x, y)

        def captum() -> Tensor:
            return nt.attribute(
                x, nt_type="smoothgrad", nt_samples=steps, stdevs=0.15, target=y,
                nt_samples_batch_size=chunk_steps, abs=False,
            )

    ours(), captum()  # warm-up (allocator, cuDNN autotuning, timm lazy init)
    t_ours, t_cap = [], []
    for _ in range(repeats):  # alternate so both see the same machine load
        t_ours.append(best_time(ours, 1, device))
        t_cap.append(best_time(captum, 1, device))
    ips_ours, ips_cap = batch / min(t_ours), batch / min(t_cap)
    return {
        "model": model_name,
        "method": "IntegratedGradients" if method == "ig" else "SmoothGrad",
        "input": list(shape),
        "batch": batch,
        "steps_or_samples": steps,
        "rows_per_chunk": rows,
        "robustattr_images_per_s": round(ips_ours, 3),
        "captum_images_per_s": round(ips_cap, 3),
        "ratio": round(ips_ours / ips_cap, 4),
        "robustattr_times_s": [round(t, 4) for t in t_ours],
        "captum_times_s": [round(t, 4) for t in t_cap],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 8, m=n=10, 4 repeats (CPU run, ~3 min on 2 cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="override the batch size (default 64; quick 8)")
    p.add_argument("--steps", type=int, default=None, help="override m and n (default 50; quick 10)")
    p.add_argument("--chunk-steps", type=int, default=10, help="path points / noise draws per chunk")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per library (default 3; quick 4)")
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads (default: torch's; --quick: 1, which avoids oversubscription noise on a shared CPU)",
    )
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    batch = a.batch or (8 if a.quick else 64)
    steps = a.steps or (10 if a.quick else 50)
    repeats = a.repeats or (4 if a.quick else 3)
    chunk = min(a.chunk_steps, steps)
    device = torch.device(a.device)
    threads = a.threads or (1 if a.quick and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cpu" and not a.quick and a.batch is None:
        print("note: the full setting (batch 64, m=n=50) takes tens of minutes on a small CPU; try --quick", flush=True)
    cases = []
    for model_name in ("smallcnn", "resnet18"):
        for method in ("ig", "smoothgrad"):
            res = run_case(model_name, method, batch, steps, chunk, repeats, device)
            print(
                f"{model_name:9s} {res['method']:20s} robustattr {res['robustattr_images_per_s']:9.2f} img/s  "
                f"captum {res['captum_images_per_s']:9.2f} img/s  ratio {res['ratio']:.3f}",
                flush=True,
            )
            cases.append(res)
    result = {
        "benchmark": "attribution_throughput",
        "quick": a.quick,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "target": "ratio >= 1.0 (robustattr at least as fast as Captum)",
        "cases": cases,
        "min_ratio": min(float(c["ratio"]) for c in cases),  # type: ignore[arg-type]
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
