"""Speed of robustattr's batched metrics vs per-sample library loops (same run, same data).

Cases: Kendall τ-b, Spearman ρ, top-k intersection, LENS top-k (w=3) on batches of 32 maps
of 28×28 (k=100) and 224×224 (k=1000). References: a Python loop over the batch calling
``scipy.stats.kendalltau`` / ``scipy.stats.spearmanr`` (rank metrics) or NumPy
(``argpartition`` top-k sets, sliding-window dilation for LENS); and torchmetrics'
``KendallRankCorrCoef`` where it finishes (O(n²) per sample: only 28×28).

    python benchmarks/metrics_speed.py [--quick] [--device cpu|cuda|auto] [--out PATH]

Writes JSON (default ``benchmarks/results/metrics_speed.json``): one record per case with
``robustattr_s``, ``reference_s``, ``speedup = reference_s / robustattr_s`` (> 1: robustattr
faster), ``torchmetrics_s`` where measured, and the check that both give the same values.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from robustattr.metrics import functional as RF

OUT = Path(__file__).resolve().parent / "results" / "metrics_speed.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    out = fn()  # warm-up (and the value used for the equality check)
    _sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def _np_topk_sets(a: np.ndarray, k: int) -> np.ndarray:
    """Bool masks of the k largest entries per row (``argpartition``)."""
    idx = np.argpartition(-a, k - 1, axis=1)[:, :k]
    m = np.zeros_like(a, dtype=bool)
    np.put_along_axis(m, idx, True, axis=1)
    return m


def _np_dilate(m: np.ndarray, w: int) -> np.ndarray:
    r = w // 2
    p = np.pad(m, r, constant_values=False)
    return np.lib.stride_tricks.sliding_window_view(p, (w, w)).any(axis=(-1, -2))


def ref_kendall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([scipy.stats.kendalltau(a[i].ravel(), b[i].ravel()).statistic for i in range(len(a))])


def ref_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(len(a))])


def ref_topk(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    out = []
    for i in range(len(a)):
        ma = _np_topk_sets(a[i].reshape(1, -1), k)
        mb = _np_topk_sets(b[i].reshape(1, -1), k)
        out.append((ma & mb).sum() / k)
    return np.array(out)


def ref_lens(a: np.ndarray, b: np.ndarray, k: int, w: int) -> np.ndarray:
    out = []
    H, W = a.shape[1:]
    for i in range(len(a)):
        ma = _np_topk_sets(a[i].reshape(1, -1), k).reshape(H, W)
        mb = _np_topk_sets(b[i].reshape(1, -1), k).reshape(H, W)
        out.append((_np_dilate(ma, w) & mb).sum() / k)
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repeats (≤ 1 min on 2 CPU cores)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    repeats = 1 if args.quick else 3
    g = torch.Generator().manual_seed(0)
    records = []
    for size, k in ((28, 100), (224, 1000)):
        a = torch.rand(args.batch, size, size, generator=g)
        b = a + 0.5 * torch.rand(args.batch, size, size, generator=g)
        an, bn = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        ad, bd = a.to(dev), b.to(dev)
        cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("kendall_tau", lambda: RF.kendall_tau(ad, bd), lambda: ref_kendall(an, bn)),
            ("spearman", lambda: RF.spearman(ad, bd), lambda: ref_spearman(an, bn)),
            ("topk_intersection", lambda: RF.topk_intersection(ad, bd, k), lambda: ref_topk(an, bn, k)),
            ("lens_topk", lambda: RF.lens_topk(ad, bd, k, 3)[0], lambda: ref_lens(an, bn, k, 3)),
        ]
        if dev.type == "cpu":  # for information: the batched torch Kendall on CPU (auto dispatches to scipy)
            cases.append(("kendall_tau[backend=torch]", lambda: RF.kendall_tau(ad, bd, backend="torch"), lambda: ref_kendall(an, bn)))
        for name, ours, ref in cases:
            t_ours, v_ours = _time(ours, repeats, dev)
            t_ref, v_ref = _time(ref, repeats, torch.device("cpu"))
            err = float(np.max(np.abs(torch.as_tensor(v_ours).cpu().double().numpy() - np.asarray(v_ref))))
            rec = {
                "metric": name, "size": f"{size}x{size}", "batch": args.batch, "k": k if "topk" in name else None,
                "device": str(dev), "robustattr_s": t_ours, "reference_s": t_ref,
                "reference": "scipy loop" if name.startswith(("kendall", "spearman")) else "numpy loop",
                "speedup": t_ref / t_ours, "max_abs_diff": err,
            }
            if name == "kendall_tau":
                rec["torchmetrics_s"] = None
                if size <= 28:
                    from torchmetrics.regression import KendallRankCorrCoef

                    tm = KendallRankCorrCoef(variant="b", num_outputs=args.batch).to(dev)
                    pa, pb = ad.flatten(1).T.contiguous(), bd.flatten(1).T.contiguous()
                    t_tm, v_tm = _time(lambda: tm(pa, pb), 1, dev)
                    rec["torchmetrics_s"] = t_tm
                    rec["torchmetrics_max_abs_diff"] = float((torch.as_tensor(v_tm).cpu().double() - torch.as_tensor(v_ref)).abs().max())
                else:
                    rec["torchmetrics_note"] = "not run: O(n^2) pairwise for n=50176 per sample"
            records.append(rec)
            print(f"{name:28s} {size:>3}x{size:<3} {dev}  ours {t_ours * 1e3:9.2f} ms  ref {t_ref * 1e3:9.2f} ms  speedup {t_ref / t_ours:7.2f}  diff {err:.1e}"
                  + (f"  torchmetrics {rec['torchmetrics_s'] * 1e3:.1f} ms" if rec.get("torchmetrics_s") else ""), flush=True)
    info = {"torch": torch.__version__, "scipy": scipy.__version__, "numpy": np.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads(), "quick": args.quick,
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"info": info, "results": records}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
