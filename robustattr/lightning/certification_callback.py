"""Monitor sound attribution-robustness certificates (uniform ℓ2 smoothing) during training.

A thin adapter over :class:`robustattr.evaluation.SmoothingEvaluator` (F. Wang & A. W.-K.
Kong, "Certified ℓ2 Attribution Robustness via Uniformly Smoothed Attributions",
arXiv:2405.06361): every ``every_n_epochs`` epochs a fixed seeded validation subset is
certified (each sample once under DDP, noise seeded ``seed + index``). Logged keys (identical
on all ranks; E, τ spelled ``f"{v:g}"``):

- ``val_cert/cos_lower@eps=E``: median certified cosine at ε = E; a sample that is not
  certified counts as the trivial bound −1 (so −1 means: the median sample is not certified);
- ``val_cert/frac_certified@tau=T,eps=E``: fraction of samples with certified cosine ≥ τ;
- ``val_cert/eps_max@tau=T``: median largest certified ε for cos ≥ τ (0 when not certified);
- ``val_cert/h_norm_lower``: median lower confidence bound ℓ on ‖h(x)‖ (the evaluator's ``margin``: Bernstein for N ≥ 100 by default).

Medians are lower medians (``torch.median``). On rank zero, with a W&B logger, a line plot of
the median certified cosine against ε (``val_cert/cos_lower_curve``).
"""

from __future__ import annotations

import math

import lightning as L
from torch import Tensor

from robustattr.evaluation.smoothing import SmoothingEvaluator
from robustattr.lightning.eval_base import EvalSubsetCallback

__all__ = ["CertificationCallback"]


class CertificationCallback(EvalSubsetCallback):
    """Certify a fixed validation subset every ``every_n_epochs`` epochs and log the curves.

    Args:
        evaluator: the :class:`~robustattr.evaluation.SmoothingEvaluator` (radius, N, α, ε
            grid, τ, attribution, …). Default ``SmoothingEvaluator(n_samples=256)``.
        num_samples, every_n_epochs, batch_size, seed, progress, prefix: see
            :class:`EvalSubsetCallback` (prefix default ``val_cert``).

    Cost: ``num_samples · n_samples`` attribution evaluations per run.

    YAML::

        - class_path: robustattr.lightning.CertificationCallback
          init_args: {num_samples: 32, evaluator: {radius: 0.25, n_samples: 256}}
    """

    prefix = "val_cert"

    def __init__(
        self,
        evaluator: SmoothingEvaluator | None = None,
        num_samples: int = 32,
        every_n_epochs: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = True,
        prefix: str | None = None,
    ) -> None:
        evaluator = evaluator if evaluator is not None else SmoothingEvaluator(n_samples=256)
        if not isinstance(evaluator, SmoothingEvaluator):
            raise ValueError(f"evaluator must be a SmoothingEvaluator, got {type(evaluator).__name__}")
        super().__init__(evaluator, num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size,
                         seed=seed, progress=progress, prefix=prefix)

    def log_keys(self, summary: dict[str, float]) -> dict[str, float]:
        """The evaluator's medians and fractions under this callback's documented names."""
        ev = self.evaluator
        assert isinstance(ev, SmoothingEvaluator)
        eps = [f"{e:g}" for e in ev.eps_grid]
        taus = [f"{t:g}" for t in ev.taus]
        out: dict[str, float] = {}
        for e in eps:
            med = summary[f"cos_median@eps={e}"]
            out[f"cos_lower@eps={e}"] = -1.0 if math.isnan(med) else med  # not certified: only cos ≥ −1 holds
            for t in taus:
                out[f"frac_certified@tau={t},eps={e}"] = summary[f"frac_certified@tau={t},eps={e}"]
        for t in taus:
            out[f"eps_max@tau={t}"] = summary[f"eps_max_median@tau={t}"]
        out["h_norm_lower"] = summary["h_norm_lower_median"]
        return out

    def log_artifacts(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """W&B line plot of the median certified cosine vs ε (rank zero; no-op without a W&B logger)."""
        loggers = getattr(trainer, "loggers", None) or []
        wb = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
        if not wb or self.last_summary is None:
            return
        import wandb

        ev = self.evaluator
        assert isinstance(ev, SmoothingEvaluator)
        logged = self.log_keys(self.last_summary)
        data = [[e, logged[f"cos_lower@eps={e:g}"]] for e in ev.eps_grid]
        table = wandb.Table(data=data, columns=["eps", "cos_lower_median"])
        plot = wandb.plot.line(table, "eps", "cos_lower_median", title="certified cosine (median; -1: not certified) vs eps")
        wb[0].experiment.log({f"{self.prefix}/cos_lower_curve": plot, "trainer/global_step": trainer.global_step})
