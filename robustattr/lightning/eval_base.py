"""Base of the validation-time evaluation callbacks (attacks, certification, bounds).

Each callback evaluates a **fixed, seeded subset** of the validation set. Under DDP the
subset is sharded by position (``indices[rank::world_size]``) with no padding, so every
sample is evaluated exactly once (DistributedSampler's duplicate padding never enters);
per-sample results are gathered back into subset order on every rank, summarised, and
logged with identical values on all ranks. Per-sample random streams are seeded with
``seed + dataset_index`` (see :func:`robustattr.utils.per_sample_noise`), so 1 process and
N processes produce the same numbers.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from tqdm.auto import tqdm


class EvalSubsetCallback(Callback):
    """Run :meth:`evaluate` on a fixed validation subset every ``every_n_epochs`` epochs.

    Subclasses implement :meth:`evaluate` (per-sample tensors for one batch) and
    :meth:`summarize` (scalars from the gathered per-sample tensors), and may override
    :meth:`log_artifacts` (rank zero only: images, tables, plots).

    Args:
        num_samples: size of the subset (capped at the validation set size).
        every_n_epochs: run after every n-th training epoch (always under ``trainer.validate``).
        batch_size: samples evaluated together.
        seed: selects the subset and seeds per-sample noise (``seed + index``).
        progress: show a progress bar on rank zero.
    """

    prefix: str = "val_eval"

    def __init__(self, num_samples: int = 64, every_n_epochs: int = 1, batch_size: int = 32, seed: int = 0, progress: bool = True) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples, self.every_n_epochs, self.batch_size = num_samples, every_n_epochs, batch_size
        self.seed, self.progress = seed, progress
        self.last_results: dict[str, Tensor] | None = None
        self.last_summary: dict[str, Tensor] | None = None

    # ---- to implement -------------------------------------------------------------
    @abstractmethod
    def evaluate(self, pl_module: L.LightningModule, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        """Per-sample results for ``x: [b, C, H, W]``, ``y: [b]``, dataset ``index: [b]``.

        Returns tensors with leading dimension b (any trailing shape, float or bool).
        Runs with gradients enabled and the model in eval mode.
        """

    @abstractmethod
    def summarize(self, results: dict[str, Tensor]) -> dict[str, Tensor]:
        """Scalars to log (keys without prefix) from the full ``[num_samples, ...]`` results."""

    def log_artifacts(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """Rank zero only: images, tables, plots. Default: nothing."""

    # ---- machinery ------------------------------------------------------------------
    def subset_indices(self, dataset_len: int) -> Tensor:
        """Sorted indices of the fixed subset (depends only on ``seed`` and the set size)."""
        g = torch.Generator().manual_seed(self.seed)
        n = min(self.num_samples, dataset_len)
        return torch.randperm(dataset_len, generator=g)[:n].sort().values

    def should_run(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != "fit":
            return True
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    @staticmethod
    def _val_dataset(trainer: L.Trainer):  # type: ignore[no-untyped-def]
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0]
        if loaders is None:
            raise RuntimeError("no validation dataloader: evaluation callbacks need one")
        return loaders.dataset

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.should_run(trainer):
            return
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"{type(self).__name__} needs gradients at validation, but Lightning runs validation under "
                "torch.inference_mode. Construct the Trainer with inference_mode=False (train.py's default)."
            )
        summary = self.run(trainer, pl_module)
        for key, value in summary.items():
            pl_module.log(f"{self.prefix}/{key}", value.to(pl_module.device, torch.float32), sync_dist=True)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Tensor]:
        """Evaluate, gather across ranks, summarise; returns the summary (also kept in ``last_summary``)."""
        dataset = self._val_dataset(trainer)
        indices = self.subset_indices(len(dataset))
        rank, world = trainer.global_rank, trainer.world_size
        local = indices[rank::world]
        was_training = pl_module.training
        pl_module.eval()
        chunks: dict[str, list[Tensor]] = {}
        device = pl_module.device
        batches = [local[i : i + self.batch_size] for i in range(0, len(local), self.batch_size)]
        bar = tqdm(batches, desc=type(self).__name__, leave=False, disable=not (self.progress and trainer.is_global_zero))
        try:
            with torch.enable_grad():
                for idx in bar:
                    items = [dataset[int(i)] for i in idx]
                    x = torch.stack([it[0] for it in items]).to(device)
                    y = torch.as_tensor([int(it[1]) for it in items], device=device)
                    out = self.evaluate(pl_module, x, y, idx.to(device))
                    for k, v in out.items():
                        chunks.setdefault(k, []).append(v.detach())
        finally:
            pl_module.train(was_training)
        local_results = {k: torch.cat(v) for k, v in chunks.items()}
        results = self.gather(pl_module, local_results, len(indices), world)
        results["index"] = indices.to(device)
        self.last_results = results
        summary = self.summarize(results)
        self.last_summary = summary
        if trainer.is_global_zero:
            self.log_artifacts(trainer, pl_module, results)
        return summary

    @staticmethod
    def gather(pl_module: L.LightningModule, local: dict[str, Tensor], n_total: int, world: int) -> dict[str, Tensor]:
        """Reassemble per-sample tensors from all ranks in subset order.

        Rank r holds positions ``r, r+W, r+2W, …``; each rank pads to ``ceil(n/W)`` rows,
        ``all_gather`` gives ``[W, L, …]`` and position p is ``gathered[p % W, p // W]``.
        """
        if world == 1:
            return local
        rows = math.ceil(n_total / world)
        out: dict[str, Tensor] = {}
        for k in sorted(local):
            v = local[k]
            dtype = v.dtype
            v = v.to(torch.float64) if dtype == torch.bool else v
            pad = torch.zeros((rows - v.shape[0], *v.shape[1:]), dtype=v.dtype, device=v.device)
            g = pl_module.all_gather(torch.cat([v, pad]))  # [W, rows, ...]
            pos = torch.arange(n_total, device=g.device)
            full = g[pos % world, pos // world]
            out[k] = full.to(dtype) if dtype == torch.bool else full
        return out
