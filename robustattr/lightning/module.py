"""RobustClassifier: a backbone behind ``Normalize`` trained with any pluggable robust loss."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from robustattr.losses.base import LossOutput, RobustLoss
from robustattr.losses.standard import StandardLoss
from robustattr.models.build import build_model


def _default_optimizer(params):  # type: ignore[no-untyped-def]
    return torch.optim.Adam(params, lr=1e-3)


class RobustClassifier(L.LightningModule):
    """Classifier ``f(x) = backbone(Normalize(x))`` trained with ``loss(self.model, x, y)``.

    Args:
        backbone: any ``nn.Module`` mapping ``[B, C, H, W]`` to logits ``[B, K]``.
        loss: a robust objective returning :class:`LossOutput` (default :class:`StandardLoss`).
        num_classes: K (for the accuracy metrics).
        mean, std: per-channel normalisation placed inside the model (budgets stay in pixels).
        optimizer: a callable ``params -> Optimizer`` (YAML: ``class_path: torch.optim.SGD``).
        lr_scheduler: optional callable ``optimizer -> LRScheduler``.

    Logged keys: ``train/loss``, ``train/<term>`` for every loss term, ``train/acc``,
    ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        loss: RobustLoss | None = None,
        num_classes: int = 10,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # Only plain values go into hparams so checkpoints load with weights_only=True; the full
        # architecture travels as the resolved YAML config (``robustattr_config``, set by the CLI).
        self.save_hyperparameters(ignore=["backbone", "loss", "optimizer", "lr_scheduler"])
        self.hparams["mean"] = list(mean) if mean is not None else None
        self.hparams["std"] = list(std) if std is not None else None
        self.robustattr_config: str | None = None
        self.model = build_model(backbone, mean, std)
        self.loss = loss if loss is not None else StandardLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(num_classes)
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes)
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, K]`` for ``x: [B, C, H, W]`` in [0, 1]."""
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        out: LossOutput = self.loss(self.model, x, y)
        bs = x.shape[0]
        self.log("train/loss", out.loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        if out.logits is not None:
            self.train_acc(out.logits, y)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        return out.loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        with torch.no_grad():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        metric = self.val_acc if stage == "val" else self.test_acc
        metric(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=x.shape[0], sync_dist=True)
        self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=stage == "val", batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the resolved YAML config so ``load_classifier(ckpt)`` can rebuild the model."""
        if self.robustattr_config is not None:
            checkpoint["robustattr_config"] = self.robustattr_config

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "epoch"}}
