"""Validation-time worst-case attribution deviation bounds (seed 001, SPEC §6)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torch import Tensor

from robustattr.attributions import Saliency, sample_gaussian
from robustattr.attributions.base import Attribution
from robustattr.bounds.worst_case import (
    FULL_JACOBIAN_LIMIT,
    smooth_model,
    top_singular,
    worst_case_bounds,
)
from robustattr.lightning.eval_base import EvalSubsetCallback
from robustattr.utils import per_sample_noise

_DEFAULT_EPS = {"l2": 0.1, "linf": 0.01}


class WorstCaseBoundCallback(EvalSubsetCallback):
    """Log first-order worst-case attribution deviation estimates on a fixed validation subset.

    Per sample (softplus surrogate of the model, see :mod:`robustattr.bounds.worst_case`):
    ``ξ_max = σ_max(∂g/∂x)`` by batched Lanczos; for each norm ``T_e`` (ℓ2: ``ξ_max ε``;
    ℓ∞: ``ε·min(sqrt(Σ|P_ij|), √d ξ_max)``), ``T'_e = c·T_e`` (Eq. 11) and the cosine bound
    in degrees ``T_c_deg`` (Eq. 10; NaN where vacuous, i.e. ``T_e > ‖g(x)‖``).

    Logged keys (mean over the subset; ``_max`` the maximum):
    ``val_bound/xi_max``, ``val_bound/xi_max_max`` and, per norm, ``val_bound/T_e``,
    ``val_bound/T_e_max``, ``val_bound/T_e_prime``, ``val_bound/T_e_prime_max``,
    ``val_bound/T_c_deg`` (mean over non-vacuous samples), ``val_bound/T_c_deg_max``,
    ``val_bound/T_c_vacuous_frac``. With several norms the per-norm keys read
    ``val_bound/<norm>/T_e`` etc. Each sample is evaluated once under DDP; the Lanczos start
    vector of sample i is seeded with ``seed + i``, so values do not depend on batching or ranks
    (up to Lanczos convergence tolerance).

    Cost per batch: one attribution with ``create_graph=True`` plus ~2 reverse passes per
    Lanczos step (≤ ``iters``), and for ℓ∞ the full Jacobian (d reverse passes, d ≤
    ``full_jacobian_limit``; above it only ``√d·ξ_max`` is used).

    Args:
        every_n_epochs: run every n-th epoch.
        num_samples: size of the fixed validation subset.
        norms: any of ``"l2"``, ``"linf"``.
        eps: ε per norm (a float applies to every norm); default ``{"l2": 0.1, "linf": 0.01}``.
        attribution: the attribution bounded (default :class:`Saliency`).
        iters: maximum Lanczos steps; tol: relative residual tolerance.
        surrogate_beta: softplus β for ReLU models.
        full_jacobian_limit: largest d for the ℓ∞ ``Σ|P_ij|`` term.
        batch_size, seed, progress: see :class:`EvalSubsetCallback`.
    """

    prefix = "val_bound"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 32,
        norms: Sequence[str] = ("l2", "linf"),
        eps: float | Mapping[str, float] | None = None,
        attribution: Attribution | None = None,
        iters: int = 100,
        tol: float = 1e-5,
        surrogate_beta: float = 10.0,
        full_jacobian_limit: int = FULL_JACOBIAN_LIMIT,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        super().__init__(num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size, seed=seed, progress=progress)
        norms = tuple(norms)
        if not norms or any(n not in ("l2", "linf") for n in norms):
            raise ValueError(f"norms must be a non-empty subset of ('l2', 'linf'), got {norms}")
        if eps is None:
            eps_map = {n: _DEFAULT_EPS[n] for n in norms}
        elif isinstance(eps, Mapping):
            missing = [n for n in norms if n not in eps]
            if missing:
                raise ValueError(f"eps has no value for norm(s) {missing}")
            eps_map = {n: float(eps[n]) for n in norms}
        else:
            eps_map = {n: float(eps) for n in norms}
        for n, e in eps_map.items():
            if not e > 0:
                raise ValueError(f"eps must be > 0, got {e} for norm {n}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.norms, self.eps = norms, eps_map
        self.attribution = attribution if attribution is not None else Saliency()
        self.iters, self.tol, self.surrogate_beta = iters, tol, surrogate_beta
        self.full_jacobian_limit = full_jacobian_limit

    def _key(self, norm: str, name: str) -> str:
        return name if len(self.norms) == 1 else f"{norm}/{name}"

    def evaluate(self, pl_module: L.LightningModule, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        """Per-sample ``xi_max`` and, per norm, ``T_e``, ``T_e_prime``, ``T_c_deg``, ``vacuous``: ``[b]``."""
        model = pl_module.model if hasattr(pl_module, "model") else pl_module
        smooth = smooth_model(model, self.surrogate_beta)
        start = per_sample_noise(sample_gaussian, index + self.seed, 1, tuple(x.shape[1:]), x.device, dtype=x.dtype, sigma=1.0)[0]
        xi, v = top_singular(self.attribution, smooth, x, y, iters=self.iters, tol=self.tol, start=start)
        out: dict[str, Tensor] = {"xi_max": xi}
        for norm in self.norms:
            b = worst_case_bounds(
                self.attribution, smooth, x, y, self.eps[norm], norm=norm, singular=(xi, v),
                full_jacobian_limit=self.full_jacobian_limit,
            )
            out[self._key(norm, "T_e")] = b.T_e
            out[self._key(norm, "T_e_prime")] = b.T_e_prime
            out[self._key(norm, "T_c_deg")] = b.T_c_deg
            out[self._key(norm, "vacuous")] = b.vacuous
        return out

    def summarize(self, results: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean and max of every per-sample quantity (``T_c_deg`` over non-vacuous samples)."""
        out: dict[str, Tensor] = {"xi_max": results["xi_max"].mean(), "xi_max_max": results["xi_max"].max()}
        for norm in self.norms:
            for name in ("T_e", "T_e_prime"):
                v = results[self._key(norm, name)]
                out[self._key(norm, name)] = v.mean()
                out[self._key(norm, f"{name}_max")] = v.max()
            tc = results[self._key(norm, "T_c_deg")]
            vac = results[self._key(norm, "vacuous")].to(tc.dtype)
            ok = ~torch.isnan(tc)
            nan = torch.tensor(math.nan, dtype=tc.dtype, device=tc.device)
            out[self._key(norm, "T_c_deg")] = tc.nanmean() if bool(ok.any()) else nan
            out[self._key(norm, "T_c_deg_max")] = tc[ok].max() if bool(ok.any()) else nan
            out[self._key(norm, "T_c_vacuous_frac")] = vac.mean()
        return out
