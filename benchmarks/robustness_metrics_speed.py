"""Robustness-metric speed: robustattr vs Quantus 0.6 in the same run, same model, attribution and n.

Cases: Max-Sensitivity, Local Lipschitz Estimate and Relative Input Stability × Saliency and
Integrated Gradients × SmallCNN (1×28×28 digits) and timm resnet18 with the CIFAR stem
(3×32×32), batch 32. Both libraries explain with the *same* robustattr attribution (Quantus
through an ``explain_func`` that converts NumPy ↔ torch), so the ratio measures the metric
machinery: Quantus explains one perturbation of the batch per call (B rows) with NumPy
round-trips and, for Relative Input Stability, two extra forward passes per step for its
prediction check; robustattr folds all n·B perturbed rows into the batch dimension
(``internal_batch_size`` rows per call) and runs one no-grad forward per perturbed row.
Both use n perturbations per sample; each draws its own (robustattr: per-sample seeded).
LLE uses per-sample max-normalisation in both (``normalise_axes=[1, 2, 3]`` for Quantus).

Timing: one warm-up pair (whose values, with Quantus's perturbations injected into
robustattr, give ``max_rel_diff``), then ``pairs`` interleaved A/B pairs (the order alternates
per pair); ``speedup`` = median over pairs of ``t_quantus / t_robustattr`` with its min and
max (> 1: robustattr faster).

    python benchmarks/robustness_metrics_speed.py [--quick] [--pairs P] [--threads T] [--out PATH]

``--quick``: n = 2 perturbations, IG with 4 steps (2 on resnet18), 3 pairs on SmallCNN and
1 pair on resnet18 (tens of minutes on one busy CPU core). Full: n = 10, IG 8 steps, 10
pairs everywhere (hours on one CPU core; meant for a GPU or an idle workstation).
Writes ``benchmarks/results/robustness_metrics_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustattr.attributions import Attribution, IntegratedGradients, Saliency
from robustattr.data import load_digits_tensors
from robustattr.metrics.robustness import (
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
    RobustnessMetric,
)
from robustattr.models import SmallCNN, TimmBackbone, build_model

OUT = Path(__file__).resolve().parent / "results" / "robustness_metrics_speed.json"
METRICS: dict[str, tuple[type[RobustnessMetric], str, str]] = {
    # name: (robustattr class, Quantus class, Quantus perturbation function)
    "max_sensitivity": (MaxSensitivity, "MaxSensitivity", "batch_uniform_noise"),
    "local_lipschitz_estimate": (LocalLipschitzEstimate, "LocalLipschitzEstimate", "batch_gaussian_noise"),
    "relative_input_stability": (RelativeInputStability, "RelativeInputStability", "batch_uniform_noise"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_case_data(model_name: str, batch: int, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    if model_name == "smallcnn":
        model = build_model(SmallCNN(), (0.3053,), (0.3247,))
        x, y = load_digits_tensors(28)
        x, y = x[:batch].clone(), y[:batch].clone()
    else:
        model = build_model(TimmBackbone("resnet18", num_classes=10, cifar_stem=True), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))
    return model.to(device).eval(), x.to(device), y.to(device)


class _Recorder:
    """Keeps the perturbed batches a Quantus perturbation function returns."""

    def __init__(self, fn: Callable[..., np.ndarray]) -> None:
        self.fn, self.batches = fn, []  # type: ignore[var-annotated]

    def __call__(self, arr: np.ndarray, indices: np.ndarray, **kw: Any) -> np.ndarray:
        out = self.fn(arr=arr, indices=indices, **kw)
        self.batches.append(out.copy())
        return out


def run_case(model_name: str, att_name: str, metric: str, batch: int, n: int, ig_steps: int, pairs: int,
             chunk: int, device: torch.device) -> dict[str, Any]:
    import quantus
    from quantus.functions import perturb_func

    model, x, y = make_case_data(model_name, batch, device)
    att: Attribution = Saliency() if att_name == "saliency" else IntegratedGradients(steps=ig_steps, baseline=0.0)
    cls, qname, pname = METRICS[metric]
    qkw: dict[str, Any] = {"normalise_func_kwargs": {"normalise_axes": [1, 2, 3]}} if metric == "local_lipschitz_estimate" else {}
    idx = torch.arange(batch, device=device)
    xn, yn = x.cpu().numpy(), y.cpu().numpy()

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        g = att(model, torch.as_tensor(inputs, device=device), torch.as_tensor(targets, device=device))
        return g.detach().cpu().numpy()

    def run_quantus(perturb: Callable[..., np.ndarray] | None = None) -> np.ndarray:
        q = getattr(quantus, qname)(nr_samples=n, perturb_func=perturb or getattr(perturb_func, pname),
                                    disable_warnings=True, **qkw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = q(model=model, x_batch=xn, y_batch=yn, explain_func=explain, batch_size=batch,
                    device=str(device))
        _sync(device)
        return np.asarray(out, dtype=np.float64)

    ours = cls(attribution=att, n_samples=n, seed=0, internal_batch_size=chunk)

    def run_ours(x_perturbed: Tensor | None = None) -> np.ndarray:
        v = ours.per_sample(model, x, y, index=idx, x_perturbed=x_perturbed)
        _sync(device)
        return v.cpu().numpy()

    # warm-up pair + value check on Quantus's own perturbations
    np.random.seed(0)
    rec = _Recorder(getattr(perturb_func, pname))
    ref = run_quantus(rec)
    xp = torch.as_tensor(np.stack(rec.batches), device=device).view(n, *x.shape)
    val = run_ours(xp)
    finite = np.isfinite(ref) & np.isfinite(val)
    same_nan = bool(np.array_equal(np.isnan(ref), np.isnan(val)))
    rel = float(np.max(np.abs(val[finite] - ref[finite]) / np.abs(ref[finite]))) if finite.any() else None
    run_ours()

    t_q, t_o, ratios = [], [], []
    for p in range(pairs):
        order = ("q", "o") if p % 2 == 0 else ("o", "q")
        times = {}
        for who in order:
            t0 = time.perf_counter()
            run_quantus() if who == "q" else run_ours()
            times[who] = time.perf_counter() - t0
        t_q.append(times["q"])
        t_o.append(times["o"])
        ratios.append(times["q"] / times["o"])
    rec_out = {
        "metric": metric, "attribution": att_name, "model": model_name, "input": list(x.shape[1:]),
        "batch": batch, "n_perturbations": n, "ig_steps": ig_steps if att_name == "ig" else None,
        "robustattr_internal_batch_size": chunk, "device": str(device), "pairs": pairs,
        "quantus_s_median": statistics.median(t_q), "robustattr_s_median": statistics.median(t_o),
        "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
        "quantus_times_s": [round(t, 4) for t in t_q], "robustattr_times_s": [round(t, 4) for t in t_o],
        "max_rel_diff": rel, "same_nan_pattern": same_nan, "samples_with_value": int(finite.sum()),
    }
    print(f"{metric:26s} {att_name:8s} {model_name:8s} quantus {rec_out['quantus_s_median']:8.2f}s  "
          f"robustattr {rec_out['robustattr_s_median']:8.2f}s  speedup {rec_out['speedup']:.2f} "
          f"[{min(ratios):.2f}, {max(ratios):.2f}]  rel diff {rel}", flush=True)
    return rec_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n=2, IG 4 steps (2 on resnet18), 3 pairs (1 on resnet18)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=None, help="perturbations per sample (default 10; quick 2)")
    p.add_argument("--ig-steps", type=int, default=None, help="IG steps (default 8; quick 4 / 2 on resnet18)")
    p.add_argument("--pairs", type=int, default=None, help="timed A/B pairs per case (default 10; quick 3 / 1 on resnet18)")
    p.add_argument("--chunk", type=int, default=256, help="robustattr internal_batch_size (perturbed rows per call)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--models", default="smallcnn,resnet18")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    import quantus

    n = a.n or (2 if a.quick else 10)
    records = []
    for model_name in a.models.split(","):
        big = model_name == "resnet18"
        steps = a.ig_steps or ((2 if big else 4) if a.quick else 8)
        pairs = a.pairs or ((1 if big else 3) if a.quick else 10)
        for att_name in ("saliency", "ig"):
            for metric in METRICS:
                records.append(run_case(model_name, att_name, metric, a.batch, n, steps, pairs, a.chunk, device))
    info = {
        "torch": torch.__version__, "quantus": quantus.__version__, "numpy": np.__version__,
        "machine": platform.machine(), "threads": torch.get_num_threads(), "quick": a.quick,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "note": "same robustattr attribution on both sides; times are wall-clock on a possibly shared CPU",
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"info": info, "results": records}, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
