"""Validation-time attribution robustness: attack the attributions, log metrics and maps.

``AttributionRobustnessCallback`` is a thin adapter over
:class:`robustattr.evaluation.AttributionAttackEvaluator` (IFIA attacks: A. Ghorbani, A. Abid &
J. Zou, AAAI 2019, arXiv:1710.10547; LENS metrics: S. Kamath et al., AAAI 2024,
arXiv:2312.10534). It runs every ``every_n_epochs`` on a fixed, seeded subset of the
validation set (each sample evaluated once under DDP; attack starts and noise seeded by the
evaluator's ``seed + dataset_index``: independent of batching and of the number of ranks).

Logged keys (means over the samples the attack did not skip; NaN when it skipped all):
``val_attr/<attack>/<metric>`` (two-direction metrics also ``<metric>_fwd`` and
``<metric>_bwd``; ``<metric>`` is their mean), ``val_attr/<attack>/success_rate``,
``val_attr/<attack>/criterion`` and ``val_attr/<attack>/attacked_frac`` (fraction of the subset
attacked). With a W&B logger, :class:`AttributionMapLogger` adds images
``val_attr/<attack>/maps`` from rank zero. With ``robustness=RobustnessEvaluator(...)`` the
Quantus-definition robustness metrics of the same subset are logged too:
``val_attr/robustness/<metric>`` (mean over the samples with a value) and
``val_attr/robustness/<metric>/nan_frac``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from robustattr.evaluation.attribution_attack import AttributionAttackEvaluator
from robustattr.evaluation.robustness import RobustnessEvaluator
from robustattr.lightning.eval_base import EvalSubsetCallback
from robustattr.utils import eval_mode

__all__ = ["AttributionMapLogger", "AttributionRobustnessCallback"]


def _to_uint8_grid(maps: Tensor) -> Tensor:
    """Each map ``[H, W]`` scaled by its own maximum to ``[0, 255]`` (zero maps stay black)."""
    m = maps.detach().to(torch.float32)
    peak = m.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    return (m / peak * 255).round().clamp(0, 255).to(torch.uint8)


def _wandb_loggers(trainer: L.Trainer) -> list[Any]:
    return [lg for lg in (getattr(trainer, "loggers", None) or []) if type(lg).__name__ == "WandbLogger"]


class AttributionMapLogger:
    """W&B images of original vs attacked attribution maps, rank zero only.

    For the first ``num_images`` samples of the subset and every attack, logs one image
    ``<prefix>/<attack>/maps`` made of rows ``[x, a(x), x̃, a(x̃)]`` (maps ``a = Σ_c |g_c|``
    scaled per map to [0, 255]). Without a W&B logger it does nothing and warns once.

    Args:
        num_images: samples shown per attack (0 disables).
    """

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images = num_images
        self._warned = False

    def enabled(self, trainer: L.Trainer) -> bool:
        """Whether images would be logged (rank zero, ``num_images > 0``, a W&B logger); warns once if no W&B logger."""
        if self.num_images == 0 or not trainer.is_global_zero:
            return False
        if not _wandb_loggers(trainer):
            if not self._warned:
                warnings.warn("AttributionMapLogger: no WandbLogger attached; attribution maps are not logged", stacklevel=2)
                self._warned = True
            return False
        return True

    def __call__(self, trainer: L.Trainer, panels: Mapping[str, Sequence[Tensor]], prefix: str = "val_attr") -> bool:
        """Log ``panels[attack] = (x [n,C,H,W], a(x) [n,H,W], x̃, a(x̃))``; returns whether anything was logged."""
        if not self.enabled(trainer):
            return False
        import wandb

        payload: dict[str, Any] = {}
        for name, (x, a0, xa, a1) in panels.items():
            n = min(self.num_images, x.shape[0])
            rows = [_to_uint8_grid(x[:n].abs().sum(1)), _to_uint8_grid(a0[:n]), _to_uint8_grid(xa[:n].abs().sum(1)), _to_uint8_grid(a1[:n])]
            grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0)  # [4H, nW]
            payload[f"{prefix}/{name}/maps"] = wandb.Image(grid.cpu().numpy(), caption="rows: x, a(x), x_adv, a(x_adv)")
        payload["trainer/global_step"] = trainer.global_step
        _wandb_loggers(trainer)[0].experiment.log(payload)
        return True


class AttributionRobustnessCallback(EvalSubsetCallback):
    """Attack the model's attributions on a fixed validation subset and log robustness metrics.

    Args:
        evaluator: the :class:`~robustattr.evaluation.AttributionAttackEvaluator` (attribution,
            attacks, metrics, explain, seed). Default ``AttributionAttackEvaluator()``: top-k
            IFIA attack (ε = 0.3, 20 steps) on saliency; metrics topk, lens_topk, spearman,
            kendall, cosine; the predicted class explained.
        map_images: samples per attack shown by the :class:`AttributionMapLogger` (0: none);
            rank zero re-attacks these few samples with the same per-sample seeds.
        robustness: optional :class:`~robustattr.evaluation.RobustnessEvaluator` (Max-Sensitivity,
            Local Lipschitz Estimate, Relative Input Stability, … with Quantus's definitions),
            run on the same subset, sharded and gathered the same way; its summary is logged
            as ``<prefix>/robustness/<key>`` and its per-sample columns are added to
            ``last_results`` as ``robustness/<metric>``. A batch-dependent metric
            (Consistency) gets a ``UserWarning`` here: its values depend on ``batch_size`` and
            on the number of processes.
        num_samples, every_n_epochs, batch_size, seed, progress, prefix: see
            :class:`EvalSubsetCallback` (prefix default ``val_attr``).

    Cost per validation: ``num_samples × Σ_attacks (steps × (1 double backward + 1 attribution
    + 1 forward))`` plus two attributions per sample and attack for the metrics, plus
    ``num_samples × robustness.cost()`` attributions for the robustness metrics.

    YAML::

        - class_path: robustattr.lightning.AttributionRobustnessCallback
          init_args:
            num_samples: 32
            evaluator:
              attacks:
                topk: {class_path: robustattr.attacks.TopKAttack,
                       init_args: {attribution: robustattr.attributions.Saliency, steps: 20}}
              metrics: [topk, lens_topk, spearman, kendall]
            robustness: {metrics: [max_sensitivity, local_lipschitz_estimate]}
    """

    prefix = "val_attr"

    def __init__(
        self,
        evaluator: AttributionAttackEvaluator | None = None,
        map_images: int = 4,
        robustness: RobustnessEvaluator | None = None,
        num_samples: int = 32,
        every_n_epochs: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = True,
        prefix: str | None = None,
    ) -> None:
        evaluator = evaluator if evaluator is not None else AttributionAttackEvaluator()
        if not isinstance(evaluator, AttributionAttackEvaluator):
            raise ValueError(f"evaluator must be an AttributionAttackEvaluator, got {type(evaluator).__name__}")
        if robustness is not None and not isinstance(robustness, RobustnessEvaluator):
            raise ValueError(f"robustness must be a RobustnessEvaluator or None, got {type(robustness).__name__}")
        super().__init__(evaluator, num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size,
                         seed=seed, progress=progress, prefix=prefix)
        self.map_logger = AttributionMapLogger(map_images)
        self.robustness = robustness
        # the robustness metrics run through the same subset/shard/gather machinery (never registered with a Trainer)
        self._robustness_run = None if robustness is None else EvalSubsetCallback(
            robustness, num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size, seed=seed,
            progress=progress, prefix=f"{self.prefix}/robustness",
        )
        for name in robustness.batch_dependent if robustness is not None else []:
            warnings.warn(
                f"AttributionRobustnessCallback: robustness metric {name!r} compares each sample with the others of "
                "its batch; its logged value depends on batch_size and on the number of processes",
                UserWarning, stacklevel=2,
            )

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The attack evaluator's summary, plus ``robustness/<key>`` of the robustness evaluator if given."""
        summary = super().run(trainer, pl_module)
        if self._robustness_run is not None:
            extra = self._robustness_run.run(trainer, pl_module)
            summary.update({f"robustness/{k}": v for k, v in extra.items()})
            results = self._robustness_run.last_results
            if self.last_results is not None and results is not None:
                self.last_results.update({f"robustness/{k}": v for k, v in results.items() if k != "index"})
        return summary

    def log_artifacts(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """Original vs attacked maps of the first ``map_images`` subset samples as W&B images (rank zero)."""
        if not self.map_logger.enabled(trainer):
            return
        ev = self.evaluator
        assert isinstance(ev, AttributionAttackEvaluator)
        ids = results["index"][: self.map_logger.num_images].tolist()
        x, y = self.load(self._val_dataset(trainer), ids, pl_module.device)
        with eval_mode(pl_module), torch.enable_grad():
            panels = ev.attack_maps(self._model(pl_module), x, y, torch.as_tensor(ids, dtype=torch.int64, device=pl_module.device))
        self.map_logger(trainer, panels, prefix=self.prefix)
