"""Validation-time attribution robustness: attack the attributions, log metrics and maps.

``AttributionRobustnessCallback`` runs every ``every_n_epochs`` on a fixed, seeded subset of
the validation set (each sample evaluated once under DDP, see
:class:`~robustattr.lightning.EvalSubsetCallback`). For every attack ``name`` it computes, per
sample, the clean attribution ``g(x)``, the attack's ``x̃`` (random starts and noise seeded by
``seed + dataset_index``: independent of batching and of the number of ranks), ``g(x̃)`` with
the same noise draw for smoothed attributions, and every metric between the two.

Logged keys (means over the samples the attack did not skip, i.e. correctly classified ones;
0 when there are none): ``val_attr/<attack>/<metric>`` (two-direction metrics also log
``<metric>_fwd`` and ``<metric>_bwd``; ``<metric>`` is their mean),
``val_attr/<attack>/success_rate``, ``val_attr/<attack>/criterion`` and
``val_attr/<attack>/attacked_frac`` (fraction of the subset attacked).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from robustattr.attacks.core import (
    ProjectedAscentAttack,
    RandomStreams,
    attribution_noise,
    attribution_with_noise,
)
from robustattr.attacks.ifia import TopKAttack
from robustattr.attacks.manipulate import ManipulateAttack
from robustattr.attributions import Saliency
from robustattr.attributions.base import Attribution
from robustattr.lightning.eval_base import EvalSubsetCallback
from robustattr.metrics.classes import AttributionMetric, build_metric

__all__ = ["AttributionMapLogger", "AttributionRobustnessCallback"]


def _instantiate(spec: Any) -> Any:
    """Instantiate ``{"class_path": ..., "init_args": {...}}`` (recursively); other values as is."""
    if isinstance(spec, Mapping) and "class_path" in spec:
        module, _, name = str(spec["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        kwargs = {k: _instantiate(v) for k, v in dict(spec.get("init_args", {}) or {}).items()}
        return cls(**kwargs)
    return spec


def _to_uint8_grid(maps: Tensor) -> Tensor:
    """Each map ``[H, W]`` scaled by its own maximum to ``[0, 255]`` (zero maps stay black)."""
    m = maps.detach().to(torch.float32)
    peak = m.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    return (m / peak * 255).round().clamp(0, 255).to(torch.uint8)


class AttributionMapLogger:
    """W&B images of original vs attacked attribution maps, rank zero only.

    For the first ``num_images`` samples of the subset and every attack, logs one image
    ``val_attr/<attack>/maps`` made of rows ``[x, a(x), x̃, a(x̃)]`` (maps ``a = Σ_c |g_c|``
    scaled per map to [0, 255]). Without a W&B logger it does nothing and warns once.

    Args:
        num_images: samples shown per attack (0 disables).
    """

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images = num_images
        self._warned = False

    def __call__(self, trainer: L.Trainer, panels: Mapping[str, Sequence[Tensor]]) -> bool:
        """Log ``panels[attack] = (x [n,C,H,W], a(x) [n,H,W], x̃, a(x̃))``; returns whether anything was logged."""
        if self.num_images == 0 or not trainer.is_global_zero:
            return False
        wb = [lg for lg in (getattr(trainer, "loggers", None) or []) if type(lg).__name__ == "WandbLogger"]
        if not wb:
            if not self._warned:
                warnings.warn("AttributionMapLogger: no WandbLogger attached; attribution maps are not logged", stacklevel=2)
                self._warned = True
            return False
        import wandb

        payload: dict[str, Any] = {}
        for name, (x, a0, xa, a1) in panels.items():
            n = min(self.num_images, x.shape[0])
            rows = [_to_uint8_grid(x[:n].abs().sum(1)), _to_uint8_grid(a0[:n]), _to_uint8_grid(xa[:n].abs().sum(1)), _to_uint8_grid(a1[:n])]
            grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0)  # [4H, nW]
            payload[f"val_attr/{name}/maps"] = wandb.Image(grid.cpu().numpy(), caption="rows: x, a(x), x_adv, a(x_adv)")
        payload["trainer/global_step"] = trainer.global_step
        wb[0].experiment.log(payload)
        return True


class AttributionRobustnessCallback(EvalSubsetCallback):
    """Attack the model's attributions on a fixed validation subset and log robustness metrics.

    Args:
        attribution: the attribution evaluated by the metrics (default :class:`Saliency`);
            attacks carry their own (usually the same — a different one measures transfer).
        attacks: name → attack instance (YAML: ``{name: {class_path, init_args}}``); any
            :class:`~robustattr.attacks.ProjectedAscentAttack` or
            :class:`~robustattr.attacks.ManipulateAttack`. Default:
            ``{"topk": TopKAttack(Saliency(), eps=0.3, steps=20, step_size=0.03, k=100)}``.
        metrics: names from :data:`robustattr.metrics.METRICS` (default arguments) or metric
            instances (YAML ``class_path``). Default ``["topk", "lens_topk", "spearman", "kendall"]``.
        num_samples: subset size (default 32). every_n_epochs: default 1.
        batch_size, seed, progress: see :class:`EvalSubsetCallback`.
        map_images: samples per attack shown by the :class:`AttributionMapLogger` (0: none).
        explain: class explained and defended — ``"pred"`` (default, SPEC §0: the predicted
            class; every sample is attacked, the attack must keep the prediction) or
            ``"label"`` (misclassified samples are skipped and excluded from the means).

    Cost per validation: ``num_samples × Σ_attacks (steps × (1 double backward + 1 attribution
    + 1 forward))`` plus two attributions per sample for the metrics.
    """

    prefix = "val_attr"

    def __init__(
        self,
        attribution: Attribution | None = None,
        attacks: Mapping[str, ProjectedAscentAttack | ManipulateAttack] | None = None,
        metrics: Sequence[str | AttributionMetric] = ("topk", "lens_topk", "spearman", "kendall"),
        num_samples: int = 32,
        every_n_epochs: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = True,
        map_images: int = 4,
        explain: str = "pred",
    ) -> None:
        if explain not in ("pred", "label"):
            raise ValueError(f"explain must be 'pred' or 'label', got {explain!r}")
        self.explain = explain
        super().__init__(num_samples=num_samples, every_n_epochs=every_n_epochs, batch_size=batch_size, seed=seed, progress=progress)
        self.attribution = _instantiate(attribution) if attribution is not None else Saliency()
        if attacks is None:
            attacks = {"topk": TopKAttack(Saliency(), eps=0.3, steps=20, step_size=0.03, k=100)}
        self.attacks = {str(k): _instantiate(v) for k, v in attacks.items()}
        if not self.attacks:
            raise ValueError("attacks must name at least one attack")
        for name, atk in self.attacks.items():
            if not callable(atk) or "/" in name:
                raise ValueError(f"attacks[{name!r}] must be an attack instance under a name without '/', got {atk!r}")
        self.metrics = {}
        for spec in metrics:
            m = build_metric(_instantiate(spec))
            self.metrics[m.name] = m
        if not self.metrics:
            raise ValueError("metrics must name at least one metric")
        self.map_logger = AttributionMapLogger(map_images)

    @staticmethod
    def _model(pl_module: L.LightningModule) -> nn.Module:
        return getattr(pl_module, "model", pl_module)

    def evaluate(self, pl_module: L.LightningModule, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        model = self._model(pl_module)
        if self.explain == "pred":
            with torch.no_grad():
                y = model(x).argmax(1)
        seeds = index.to(torch.int64) + self.seed
        streams = RandomStreams(x, None, seeds)
        noise = attribution_noise(self.attribution, x, streams)
        g0 = attribution_with_noise(self.attribution, model, x, y, noise).detach()
        out: dict[str, Tensor] = {}
        keep_maps = self.map_logger.num_images > 0
        if keep_maps:
            out["x"] = x.detach()
            out["map_clean"] = g0.abs().sum(1)
        for j, (name, attack) in enumerate(self.attacks.items()):
            # a distinct per-sample stream per attack (still independent of batching and ranks)
            res = attack(model, x, y, sample_seeds=seeds * 1009 + j)
            g1 = attribution_with_noise(self.attribution, model, res.x_adv, y, noise).detach()
            out[f"{name}/success"] = res.success
            out[f"{name}/skipped"] = res.skipped_misclassified
            out[f"{name}/criterion"] = res.criterion.to(torch.float32)
            for mname, metric in self.metrics.items():
                for key, val in metric.per_sample(g0, g1).items():
                    out[f"{name}/{mname}" if key in ("value", "mean") else f"{name}/{mname}_{key}"] = val.to(torch.float32)
            if keep_maps:
                out[f"{name}/x_adv"] = res.x_adv
                out[f"{name}/map_adv"] = g1.abs().sum(1)
        return out

    def summarize(self, results: dict[str, Tensor]) -> dict[str, Tensor]:
        summary: dict[str, Tensor] = {}
        for name in self.attacks:
            attacked = ~results[f"{name}/skipped"].bool()
            w = attacked.to(torch.float64)
            n = w.sum().clamp_min(1.0)
            summary[f"{name}/attacked_frac"] = w.mean()
            summary[f"{name}/success_rate"] = (results[f"{name}/success"].to(torch.float64) * w).sum() / n
            for key, val in results.items():
                if key.startswith(f"{name}/") and key.split("/", 1)[1] not in ("success", "skipped", "x_adv", "map_adv"):
                    summary[key] = (val.to(torch.float64) * w).sum() / n
        return summary

    def log_artifacts(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """Original vs attacked maps as W&B images (rank zero; see :class:`AttributionMapLogger`)."""
        if self.map_logger.num_images == 0:
            return
        panels = {
            name: (results["x"], results["map_clean"], results[f"{name}/x_adv"], results[f"{name}/map_adv"]) for name in self.attacks
        }
        self.map_logger(trainer, panels)
