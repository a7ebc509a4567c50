"""Speed of ξ_max = σ_max(∂g/∂x): matrix-free batched Lanczos vs full Jacobian + SVD (issue 6).

For each case, on the softplus(β=10) surrogate of a seeded, untrained network in eval mode,
Saliency attribution, B samples:

- ``lanczos_s_per_sample``: :func:`robustattr.certify.top_singular` on the whole batch (tol 1e-5),
  divided by B;
- ``full_s_per_sample``: :func:`robustattr.certify.full_jacobian` (d reverse passes in chunks)
  plus ``torch.linalg.svdvals``, divided by B;
- ``speedup`` = full ÷ Lanczos; ``rel_error`` = max_b |ξ_Lanczos − σ_1| / σ_1.

Cases: SmallCNN 1×28×28 (d = 784) and timm resnet18 with the CIFAR stem, 3×32×32 (d = 3072).
Writes ``benchmarks/results/bounds_speed.json``.

    python benchmarks/bounds_speed.py [--quick] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from robustattr.attributions import Saliency
from robustattr.bounds import full_jacobian, top_singular
from robustattr.models import SmallCNN, TimmBackbone, build_model, replace_activation


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_jacobian_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int, chunk: int) -> float:
    """Seconds for ``rows`` Jacobian rows by the same replicate-and-backprop path as ``full_jacobian``."""
    sal, B, d = Saliency(), x.shape[0], x[0].numel()
    t = time.perf_counter()
    for i0 in range(0, rows, chunk):
        c = min(chunk, rows - i0)
        xr = x.repeat(c, 1, 1, 1).requires_grad_(True)
        g = sal(model, xr, y.repeat(c), create_graph=True).reshape(c * B, d)
        cot = torch.zeros(c, B, d, device=x.device)
        idx = torch.arange(c, device=x.device)
        cot[idx, :, i0 + idx] = 1.0
        torch.autograd.grad(g, xr, grad_outputs=cot.reshape(c * B, d))
    _sync(x.device)
    return time.perf_counter() - t


def run_case(
    name: str, model: nn.Module, shape: tuple[int, int, int], B: int, chunk: int, device: torch.device,
    tol: float, extrapolate_rows: int | None = None,
) -> dict:
    """Time Lanczos and full Jacobian + SVD on the same B samples; return the JSON entry.

    With ``extrapolate_rows`` the Jacobian is timed on that many rows and scaled by d/rows (its
    cost is exactly linear in the rows), the SVD is timed on a random matrix of the same size,
    and ``rel_error`` is taken against a tightly converged Lanczos run (tol 1e-9, 400 steps).
    """
    model = replace_activation(model, nn.Softplus(beta=10.0)).to(device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((B, *shape), generator=g, device=device)
    y = torch.arange(B, device=device) % 10
    sal = Saliency()
    top_singular(sal, model, x[:1], y[:1], iters=3, tol=None)  # warm-up
    _sync(device)
    t = time.perf_counter()
    xi, _ = top_singular(sal, model, x, y, iters=300, tol=tol, generator=torch.Generator(device=device).manual_seed(1))
    _sync(device)
    t_lanczos = time.perf_counter() - t
    d = x[0].numel()
    if extrapolate_rows is None:
        t = time.perf_counter()
        J = full_jacobian(sal, model, x, y, chunk_size=chunk)
        s1 = torch.linalg.svdvals(J.double())[:, 0]
        _sync(device)
        t_full = time.perf_counter() - t
        reference = "full Jacobian SVD"
    else:
        t_rows = time_jacobian_rows(model, x, y, extrapolate_rows, chunk) * d / extrapolate_rows
        t = time.perf_counter()
        torch.linalg.svdvals(torch.randn(B, d, d, device=device, dtype=torch.float64))
        _sync(device)
        t_full = t_rows + time.perf_counter() - t
        s1, _ = top_singular(sal, model, x, y, iters=400, tol=1e-9, generator=torch.Generator(device=device).manual_seed(7))
        s1 = s1.double()
        reference = f"Lanczos tol 1e-9 (full Jacobian timed on {extrapolate_rows} rows, extrapolated)"
    rel = float(((xi.double() - s1).abs() / s1).max())
    entry = {
        "case": name,
        "d": int(x[0].numel()),
        "batch": B,
        "lanczos_s_per_sample": t_lanczos / B,
        "full_s_per_sample": t_full / B,
        "speedup": t_full / t_lanczos,
        "rel_error": rel,
        "rel_error_reference": reference,
        "lanczos_tol": tol,
        "xi_max": xi.tolist(),
    }
    print(json.dumps(entry), flush=True)
    return entry


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (for CI / make bench)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tol", type=float, default=1e-3, help="Lanczos residual tolerance (|θ−λ| ≤ residual, so ξ rel. error ≲ tol/2)")
    p.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "bounds_speed.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    B_small, B_res = (2, 1) if args.quick else (4, 2)
    cases = [
        run_case("smallcnn_28x28", build_model(SmallCNN(), (0.3053,), (0.3247,)), (1, 28, 28), B_small, 64, device, args.tol),
        run_case(
            "resnet18_32x32",
            build_model(TimmBackbone("resnet18", num_classes=10, in_channels=3, pretrained=False, cifar_stem=True), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
            (3, 32, 32), B_res, 32, device, args.tol, extrapolate_rows=128 if args.quick else None,
        ),
    ]
    result = {
        "benchmark": "bounds_speed",
        "what": "seconds per sample for xi_max: batched matrix-free Lanczos vs full Jacobian + SVD (Saliency, softplus surrogate)",
        "target": "speedup >= 50 at d=3072 with rel_error <= 1e-3",
        "device": str(device),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "cases": {c["case"]: c for c in cases},
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
