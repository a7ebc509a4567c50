"""Monitor sound attribution-robustness certificates (uniform ℓ2 smoothing) during training.

Every ``every_n_epochs`` epochs, a fixed seeded validation subset is certified with
:class:`~robustattr.certify.UniformSmoothingCertifier` (sharded across DDP ranks, each sample
once, per-sample noise seeded ``seed + index``). Logged keys (identical on all ranks):

- ``val_cert/cos_lower@eps=E``: median certified cosine at ε = E (a sample that is not
  certified contributes the trivial bound −1);
- ``val_cert/frac_certified@tau=T,eps=E``: fraction of samples with certified cosine ≥ τ;
- ``val_cert/eps_max@tau=T``: median largest certified ε for cos ≥ τ (0 when not certified);
- ``val_cert/h_norm_lower``: median ℓ, the lower confidence bound on ‖h‖ (margin ``margin``).

On rank zero, with a W&B logger, a line plot of the median certified cosine against ε.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor

from robustattr.attributions.base import Attribution
from robustattr.certify.smoothing import DEFAULT_EPS_GRID, DEFAULT_TAUS, UniformSmoothingCertifier
from robustattr.lightning.eval_base import EvalSubsetCallback


def _fmt(v: float) -> str:
    return f"{v:g}"


class CertificationCallback(EvalSubsetCallback):
    """Certify a fixed validation subset every ``every_n_epochs`` epochs and log the curves.

    Args:
        every_n_epochs: run after every n-th epoch (and the last).
        num_samples: size of the fixed validation subset.
        radius: smoothing radius r (pixel units).
        n_samples: Monte Carlo samples N per input.
        eps_grid: ε values of the certified cosine.
        taus: cosine thresholds τ ∈ (0, 1).
        alpha: failure probability of the Monte Carlo bound.
        bound_M: norm bound M of the base attribution.
        bounding: ``"normalize"`` or ``"clip"``.
        attribution: base attribution (default saliency).
        batch_size: inputs certified together.
        rows_per_forward: noisy copies per forward/backward.
        seed: subset selection and per-sample noise seed.
        progress: progress bar on rank zero.
        margin: lower bound ℓ on ‖h‖: ``"auto"`` (Bernstein for ``n_samples ≥ 100``, else
            Hoeffding), ``"bernstein"`` or ``"hoeffding"`` (see
            :func:`robustattr.certify.norm_lower_bound`).
    Cost: ``num_samples · n_samples`` gradient evaluations per run.
    """

    prefix = "val_cert"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 32,
        radius: float = 0.25,
        n_samples: int = 256,
        eps_grid: Sequence[float] = DEFAULT_EPS_GRID,
        taus: Sequence[float] = DEFAULT_TAUS,
        alpha: float = 1e-3,
        bound_M: float = 1.0,
        bounding: str = "normalize",
        attribution: Attribution | None = None,
        batch_size: int = 16,
        rows_per_forward: int = 1024,
        seed: int = 0,
        progress: bool = True,
        margin: str = "auto",
    ) -> None:
        super().__init__(num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size, seed=seed, progress=progress)
        self.certifier = UniformSmoothingCertifier(
            attribution=attribution,
            radius=radius,
            n_samples=n_samples,
            alpha=alpha,
            bound_M=bound_M,
            bounding=bounding,
            eps_grid=list(eps_grid),
            taus=list(taus),
            batch_size=rows_per_forward,
            seed=seed,
            margin=margin,
        )
        self.eps_grid = [float(e) for e in self.certifier.eps_grid]
        self.taus = [float(t) for t in self.certifier.taus]

    def evaluate(self, pl_module: L.LightningModule, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        """Per-sample ``cos_lower [b, E]``, ``eps_max [b, T]``, ``h_norm``, ``h_norm_lower`` (predicted class)."""
        model = getattr(pl_module, "model", pl_module)
        cert = self.certifier.certify(model, x, y=None, index=index)
        return {
            "cos_lower": cert.cos_lower,
            "eps_max": cert.eps_max,
            "h_norm": cert.h_norm,
            "h_norm_lower": cert.h_norm_lower,
        }

    def summarize(self, results: dict[str, Tensor]) -> dict[str, Tensor]:
        cos = results["cos_lower"].to(torch.float64)
        cos_or_trivial = torch.nan_to_num(cos, nan=-1.0)  # not certified: only the trivial cos ≥ −1 holds
        epsm = torch.nan_to_num(results["eps_max"].to(torch.float64), nan=0.0)
        out: dict[str, Tensor] = {}
        for j, e in enumerate(self.eps_grid):
            out[f"cos_lower@eps={_fmt(e)}"] = cos_or_trivial[:, j].median()
            for tau in self.taus:
                out[f"frac_certified@tau={_fmt(tau)},eps={_fmt(e)}"] = (cos_or_trivial[:, j] >= tau).double().mean()
        for k, tau in enumerate(self.taus):
            out[f"eps_max@tau={_fmt(tau)}"] = epsm[:, k].median()
        out["h_norm_lower"] = results["h_norm_lower"].to(torch.float64).median()
        return out

    def log_artifacts(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """W&B line plot of the median certified cosine vs ε (rank zero; no-op without a W&B logger)."""
        loggers = getattr(trainer, "loggers", None) or []
        wb = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
        if not wb:
            return
        import wandb

        med = torch.nan_to_num(results["cos_lower"].to(torch.float64), nan=-1.0).median(dim=0).values.cpu().tolist()
        table = wandb.Table(data=[[e, c] for e, c in zip(self.eps_grid, med, strict=True)], columns=["eps", "cos_lower_median"])
        plot = wandb.plot.line(table, "eps", "cos_lower_median", title="certified cosine (median) vs eps")
        wb[0].experiment.log({f"{self.prefix}/cos_lower_curve": plot, "trainer/global_step": trainer.global_step})
