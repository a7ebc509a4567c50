"""Speed of the uniform-smoothing certifier (issue 5 benchmark).

(a) efficiency = gradient evaluations per second inside the certifier ÷ raw batched gradient
    evaluations per second of the same model (Saliency on a ``[rows, C, H, W]`` batch: the
    physical limit of Monte Carlo smoothing). Target ≥ 0.8.
(b) seconds per sample with N noise samples, certifier vs a straightforward per-sample loop
    (one noise sample per forward/backward); ``speedup_vs_loop`` = loop ÷ certifier. The loop
    is timed on ``loop_n`` iterations and scaled linearly to N (its cost is exactly linear).

Cases: SmallCNN 1×28×28, resnet18 (CIFAR stem) 3×32×32; on a CUDA device also resnet50
3×224×224. Writes ``benchmarks/results/certify_speed.json``.

    python benchmarks/certify_speed.py [--quick] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from robustattr.attributions import Saliency, sample_l2_ball
from robustattr.certify import UniformSmoothingCertifier, bound_attribution
from robustattr.models import SmallCNN, TimmBackbone, build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_grads_per_second(model: nn.Module, shape: tuple[int, ...], rows: int, reps: int, device: torch.device) -> float:
    """Saliency on a ``[rows, *shape]`` batch, repeated: gradients per second (warm-up excluded)."""
    sal = Saliency()
    z = torch.rand((rows, *shape), device=device)
    y = torch.zeros(rows, dtype=torch.long, device=device)
    sal(model, z, y)
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        sal(model, z, y)
    _sync(device)
    return rows * reps / (time.perf_counter() - t)


def loop_seconds_per_sample(model: nn.Module, x: torch.Tensor, n_total: int, loop_n: int, radius: float) -> float:
    """Straightforward loop: per noise sample, one forward/backward on a single input; scaled to ``n_total``."""
    sal = Saliency()
    g = torch.Generator(device=x.device).manual_seed(0)
    y = torch.zeros(1, dtype=torch.long, device=x.device)
    acc = torch.zeros_like(x, dtype=torch.float64)
    sal(model, x, y)  # warm-up
    _sync(x.device)
    t = time.perf_counter()
    for _ in range(loop_n):
        eta = sample_l2_ball(1, tuple(x.shape[1:]), radius, g, x.device)
        acc += bound_attribution(sal(model, x + eta, y), 1.0, "normalize").double()
    _sync(x.device)
    return (time.perf_counter() - t) * n_total / loop_n


def run_case(name: str, model: nn.Module, shape: tuple[int, ...], n: int, batch: int, rows: int, loop_n: int, device: torch.device) -> dict:
    model = model.to(device).eval()
    x = torch.rand((batch, *shape), device=device)
    cert = UniformSmoothingCertifier(radius=0.25, n_samples=n, batch_size=rows, noise_block=max(1, rows // batch))
    cert.certify(model, x[:1], index=torch.tensor([0]))  # warm-up
    _sync(device)
    t = time.perf_counter()
    cert.certify(model, x, index=torch.arange(batch))
    _sync(device)
    secs = time.perf_counter() - t
    cert_gps = batch * n / secs
    raw_gps = raw_grads_per_second(model, shape, rows, max(2, (batch * n) // rows // 2), device)
    loop_sps = loop_seconds_per_sample(model, x[:1], n, loop_n, 0.25)
    res = {
        "case": name,
        "input": list(shape),
        "n_samples": n,
        "inputs_per_batch": batch,
        "rows_per_forward": rows,
        "certifier_grads_per_s": cert_gps,
        "raw_grads_per_s": raw_gps,
        "efficiency": cert_gps / raw_gps,
        "certifier_s_per_sample": secs / batch,
        "loop_s_per_sample": loop_sps,
        "loop_timed_iterations": loop_n,
        "speedup_vs_loop": loop_sps / (secs / batch),
    }
    print(
        f"{name:>24}: efficiency {res['efficiency']:.2f} ({cert_gps:.0f} vs {raw_gps:.0f} grad/s), "
        f"{res['certifier_s_per_sample']:.2f} s/sample vs loop {loop_sps:.2f} s/sample → ×{res['speedup_vs_loop']:.1f}",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer inputs and loop iterations (≤ 3 min on 2 CPU cores)")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "certify_speed.json"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    gpu = device.type == "cuda"
    cases = [
        ("smallcnn_28x28", build_model(SmallCNN(), (0.3,), (0.3,)), (1, 28, 28), 4 if a.quick else 16, 1000 if gpu else 500, 50 if a.quick else 300),
        ("resnet18_32x32", build_model(TimmBackbone("resnet18", 10, 3, cifar_stem=True), (0.5,) * 3, (0.25,) * 3), (3, 32, 32), 1 if a.quick else 4, 1000 if gpu else 250, 10 if a.quick else 100),
    ]
    if gpu:
        cases.append(("resnet50_224x224", build_model(TimmBackbone("resnet50", 1000, 3), (0.5,) * 3, (0.25,) * 3), (3, 224, 224), 2, 250, 50))
    results = {
        "device": str(device) if not gpu else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "quick": a.quick,
        "cases": {},
    }
    for name, model, shape, batch, rows, loop_n in cases:
        results["cases"][name] = run_case(name, model, shape, a.n_samples, batch, rows, loop_n, device)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
