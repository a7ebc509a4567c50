"""Training-time schedules of the robust objectives: a linear warm-up of the perturbation budget.

Adversarial and attributional training from a random initialisation at the full budget
often does not start learning: on MNIST-scale data PGD training at ε = 0.3 can stay at
chance accuracy for the first epochs (Madry et al., ICLR 2018, arXiv:1706.06083, trained
for ~83 epochs; see the curriculum argument of Cai et al. 2018, arXiv:1805.04807). The
standard remedy is to grow ε linearly from (near) zero over the first part of training,
as in the ε ramp of interval bound propagation (Gowal et al. 2018, arXiv:1810.12715).
:class:`BudgetWarmup` applies that ramp to any objective of :mod:`robustattr.losses` that
has a perturbation budget: PGD-AT (Madry et al. 2018), TRADES (Zhang et al., ICML 2019,
arXiv:1901.08573), IG-NORM / IG-SUM-NORM (Chen et al., NeurIPS 2019, arXiv:1905.09957),
ART (Singh et al., ECCV 2020, arXiv:1911.13073), IGR and TRADES+IGR (Wang & Kong,
NeurIPS 2022, arXiv:2205.07279).
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["BudgetWarmup", "warmup_fraction"]


def warmup_fraction(progress: float, warmup_epochs: float, start_fraction: float = 0.0) -> float:
    """Fraction of the configured budget after ``progress`` epochs of training.

    ``φ(p) = s + (1 − s) · min(1, p / E_w)`` with ``s = start_fraction`` and
    ``E_w = warmup_epochs``: linear from ``s`` at ``p = 0`` to 1 at ``p = E_w``, then 1.

    Args:
        progress: epochs completed, fractional (``epoch + batches_done / batches_per_epoch``), ≥ 0.
        warmup_epochs: length of the ramp in epochs, > 0.
        start_fraction: ``s ∈ [0, 1]``.
    """
    if not progress >= 0:
        raise ValueError(f"progress must be >= 0, got {progress!r}")
    _check_schedule(warmup_epochs, start_fraction)
    return start_fraction + (1.0 - start_fraction) * min(1.0, progress / warmup_epochs)


def _check_schedule(warmup_epochs: float, start_fraction: float) -> None:
    if not (warmup_epochs > 0 and math.isfinite(warmup_epochs)):
        raise ValueError(f"warmup_epochs must be a finite number > 0, got {warmup_epochs!r}")
    if not 0.0 <= start_fraction <= 1.0:
        raise ValueError(f"start_fraction must be in [0, 1], got {start_fraction!r}")


class BudgetWarmup(Callback):
    """Ramp the training objective's budget ε linearly over the first ``warmup_epochs`` epochs.

    Before every training batch ``b`` (of ``n`` per epoch) of epoch ``e`` the objective
    ``pl_module.loss`` gets

    ``ε_t = ε · φ(e + (b + 1)/n)``,  ``φ(p) = s + (1 − s) · min(1, p / E_w)``

    (:func:`warmup_fraction`; the ``+1`` makes the first step's budget positive even with
    ``s = 0``). With ``scale_step_size`` the inner step is scaled alike, ``α_t = α · ε_t/ε``,
    so the inner maximisation keeps the configured number of steps per radius (a fixed α
    would let sign steps overshoot a small ball and hit its corners after one step).
    ``ε`` and ``α`` are the values the objective was configured with (read once, at the
    first ``fit``); they are restored when fitting ends, also when it ends inside the ramp.
    The schedule depends only on the epoch and batch index, so a resumed run continues
    on it. Works with every objective that exposes settable ``eps`` (and ``step_size``):
    PGD-AT (Madry et al., ICLR 2018, arXiv:1706.06083), TRADES (Zhang et al., ICML 2019,
    arXiv:1901.08573), IG-NORM / IG-SUM-NORM (Chen et al., NeurIPS 2019, arXiv:1905.09957),
    ART (Singh et al., ECCV 2020, arXiv:1911.13073), IGR / TRADES+IGR (Wang & Kong,
    NeurIPS 2022, arXiv:2205.07279). The ramp is the one of Gowal et al. 2018
    (arXiv:1810.12715). SSR (Wang et al., NeurIPS 2020, arXiv:2006.07828) has no budget.

    Args:
        warmup_epochs: ``E_w > 0``, length of the ramp in (possibly fractional) epochs.
        start_fraction: ``s ∈ [0, 1]``, fraction of ε at the start of training.
        scale_step_size: also scale the objective's ``step_size`` by ``ε_t/ε``.

    Raises:
        ValueError: on bad arguments, or at ``fit`` start if the module has no ``loss``
            with a settable ``eps`` (e.g. :class:`~robustattr.losses.StandardLoss`), or if
            the number of training batches per epoch is unknown (infinite).
    """

    def __init__(self, warmup_epochs: float = 2.0, start_fraction: float = 0.0, scale_step_size: bool = True) -> None:
        super().__init__()
        _check_schedule(warmup_epochs, start_fraction)
        self.warmup_epochs, self.start_fraction, self.scale_step_size = warmup_epochs, start_fraction, scale_step_size
        self.targets: dict[str, float] | None = None

    def _loss(self, pl_module: L.LightningModule) -> object:
        loss = getattr(pl_module, "loss", None)
        if loss is None or not hasattr(loss, "eps"):
            raise ValueError(
                f"BudgetWarmup needs a training objective with a perturbation budget `eps`; "
                f"got {type(loss).__name__} (pl_module.loss)"
            )
        return loss

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = self._loss(pl_module)
        if self.targets is None:
            self.targets = {"eps": float(loss.eps)}  # type: ignore[attr-defined]
            if self.scale_step_size:
                if not hasattr(loss, "step_size"):
                    raise ValueError(f"scale_step_size=True but {type(loss).__name__} has no `step_size`")
                self.targets["step_size"] = float(loss.step_size)  # type: ignore[attr-defined]

    def fraction(self, trainer: L.Trainer, batch_idx: int) -> float:
        """``φ(e + (b + 1)/n)`` for the current epoch ``e`` and batch ``b``."""
        n = trainer.num_training_batches
        if not math.isfinite(n) or n < 1:
            raise ValueError(f"BudgetWarmup needs a finite number of training batches per epoch, got {n}")
        return warmup_fraction(trainer.current_epoch + (batch_idx + 1) / n, self.warmup_epochs, self.start_fraction)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        assert self.targets is not None
        self._apply(pl_module, self.fraction(trainer, batch_idx))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.targets is not None:
            self._apply(pl_module, 1.0)

    def _apply(self, pl_module: L.LightningModule, frac: float) -> None:
        loss = self._loss(pl_module)
        assert self.targets is not None
        for name, value in self.targets.items():
            setattr(loss, name, value * frac)

    def __repr__(self) -> str:
        return (
            f"BudgetWarmup(warmup_epochs={self.warmup_epochs}, start_fraction={self.start_fraction}, "
            f"scale_step_size={self.scale_step_size})"
        )
