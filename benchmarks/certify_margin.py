"""Fewer Monte Carlo samples for the same certificate: Bernstein vs Hoeffding margin (issue 13 benchmark).

On validation samples of the demo-sized digits SmallCNN (trained a few epochs with the
library, seeded, cached), for each N:

- ``samples_ratio`` = N'/N, where N' is the number of samples the Hoeffding margin needs to
  reach the Bernstein lower bound ℓ_B at N: ``t_H(N') = ‖ĥ_N‖ − ℓ_B`` ⇒
  ``N' = (M(1 + sqrt(2 ln(1/α)))/(‖ĥ_N‖ − ℓ_B))²`` (median, min, max over samples with ℓ_B > 0);
- the fraction of samples with certified cosine ≥ τ at fixed N under each margin (same
  samples ĥ_N, so the difference is the margin alone), for the default ε grid and τ list,
  and the median ε_max per τ.

Writes ``benchmarks/results/certify_margin.json``.

    python benchmarks/certify_margin.py [--quick] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from robustattr.certify import (
    UniformSmoothingCertifier,
    certified_cosine,
    certified_eps_max,
    hoeffding_samples_ratio,
    norm_lower_bound,
)
from robustattr.certify.smoothing import DEFAULT_EPS_GRID, DEFAULT_TAUS
from robustattr.data import DigitsDataModule
from robustattr.lightning import RobustClassifier
from robustattr.models import SmallCNN


def trained_model(cache: Path, epochs: int, seed: int = 0) -> tuple[torch.nn.Module, DigitsDataModule]:
    """SmallCNN (demo size) trained ``epochs`` epochs on the digits with Adam 1e-3; weights cached in ``cache``."""
    L.seed_everything(seed, workers=True, verbose=False)
    dm = DigitsDataModule(batch_size=64, seed=seed)
    module = RobustClassifier(SmallCNN(), mean=dm.mean, std=dm.std)
    path = cache / f"digits_smallcnn_seed{seed}_ep{epochs}.pt"
    if path.is_file():
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        dm.setup("fit")
    else:
        trainer = L.Trainer(
            max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
        )
        trainer.fit(module, datamodule=dm)
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), path)
    return module.model.eval(), dm


def _finite_or_none(v: float) -> float | None:
    """JSON has no NaN: a ratio is undefined (None) where the Bernstein bound certifies nothing."""
    return v if np.isfinite(v) else None


def _stats(v: np.ndarray) -> dict:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"median": None, "min": None, "max": None, "count": 0}
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "count": int(v.size)}


def run_n(model: torch.nn.Module, x: torch.Tensor, idx: torch.Tensor, n: int, alpha: float, radius: float, rows: int, device: torch.device) -> dict:
    eps, taus = list(DEFAULT_EPS_GRID), list(DEFAULT_TAUS)
    cert = UniformSmoothingCertifier(radius=radius, n_samples=n, alpha=alpha, eps_grid=eps, taus=taus, batch_size=rows, noise_block=min(n, 1000), margin="bernstein")
    t0 = time.perf_counter()
    hn = torch.cat([cert.certify(model, x[i : i + 4].to(device), index=idx[i : i + 4]).h_norm.cpu() for i in range(0, x.shape[0], 4)]).numpy()
    secs = time.perf_counter() - t0
    d = int(np.prod(x.shape[1:]))
    out = {"n_samples": n, "num_inputs": int(x.shape[0]), "seconds": secs, "h_norm": _stats(hn)}
    ratio = np.asarray(hoeffding_samples_ratio(hn, n, alpha), dtype=np.float64)
    out["samples_ratio"] = _stats(ratio)
    out["per_margin"] = {}
    for method in ("bernstein", "hoeffding"):
        ell = np.asarray(norm_lower_bound(hn, n, alpha, 1.0, method), dtype=np.float64)
        cos = np.nan_to_num(certified_cosine(ell, eps, radius, d), nan=-1.0)
        em = np.nan_to_num(certified_eps_max(ell, taus, radius, d), nan=0.0)
        out["per_margin"][method] = {
            "h_norm_lower": _stats(ell),
            "frac_certified": {f"tau={t:g}": {f"eps={e:g}": float((cos[:, j] >= t).mean()) for j, e in enumerate(eps)} for t in taus},
            "eps_max_median": {f"tau={t:g}": float(np.median(em[:, k])) for k, t in enumerate(taus)},
        }
    # representative ε between the two median ε_max at τ = 0.9, where the margins differ on a coarse grid
    eps_rep = float(np.sqrt(out["per_margin"]["bernstein"]["eps_max_median"]["tau=0.9"] * out["per_margin"]["hoeffding"]["eps_max_median"]["tau=0.9"]))
    out["representative_eps"] = eps_rep
    for method in ("bernstein", "hoeffding"):
        ell = np.asarray(norm_lower_bound(hn, n, alpha, 1.0, method), dtype=np.float64)
        cos = np.nan_to_num(certified_cosine(ell, [eps_rep], radius, d), nan=-1.0)[:, 0]
        out["per_margin"][method]["frac_certified_at_representative_eps"] = {f"tau={t:g}": float((cos >= t).mean()) for t in taus}
    print(
        f"N={n:>6}: ‖ĥ‖ median {out['h_norm']['median']:.3f}, samples_ratio median {out['samples_ratio']['median']} "
        f"(min {out['samples_ratio']['min']}, max {out['samples_ratio']['max']}), {secs:.0f} s",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="8 validation inputs instead of 32 (≈ 3 min on 1 CPU thread)")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--alpha", type=float, default=1e-3)
    p.add_argument("--radius", type=float, default=0.25)
    p.add_argument("--cache", default="/tmp/robustattr_bench_cache")
    p.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "certify_margin.json"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    model, dm = trained_model(Path(a.cache), a.epochs)
    model = model.to(device)
    val = dm.val_set
    n_inputs = 8 if a.quick else 32
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(val), generator=g)[:n_inputs].sort().values
    x = torch.stack([val[int(i)][0] for i in idx])
    y = torch.tensor([int(val[int(i)][1]) for i in idx])
    with torch.no_grad():
        acc = float((model(x.to(device)).argmax(1).cpu() == y).float().mean())
    ns = (1000, 10_000)
    results = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "quick": a.quick,
        "model": f"SmallCNN (demo size), digits 28x28, {a.epochs} epochs Adam 1e-3, seed 0",
        "val_accuracy_on_inputs": acc,
        "indices": idx.tolist(),
        "alpha": a.alpha,
        "radius": a.radius,
        "M": 1.0,
        "bounding": "normalize",
        "attribution": "saliency",
        "note": "samples_ratio = N'/N: Hoeffding needs N' samples for the Bernstein lower bound at N; "
        "both margins use the same ĥ_N, so the certified fractions differ by the margin only",
        "by_n": {},
    }
    for n in ns:
        results["by_n"][str(n)] = run_n(model, x, idx, n, a.alpha, a.radius, rows=1000, device=device)
    # the closed-form ratio at fixed ‖ĥ‖ (independent of the model), for reference
    # (a ratio < 1 means the Bernstein bound is the looser one at that N)
    grid = [0.5, 0.9, 0.95, 0.99, 1.0]
    results["samples_ratio_at_h_norm"] = {
        str(n): {f"{h:g}": _finite_or_none(float(hoeffding_samples_ratio(h, n, a.alpha))) for h in grid} for n in (100, 256, 1000, 10_000, 100_000)
    }
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
