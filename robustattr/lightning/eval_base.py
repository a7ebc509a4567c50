"""Run an evaluator on a fixed validation subset during training: the base of the evaluation callbacks.

The callback selects a **fixed, seeded subset** of the validation set, spreads it over the
DDP ranks with :func:`robustattr.evaluation.sharding.assign` (each sample on exactly one
rank, no padding duplicates), runs :meth:`Evaluator.evaluate` on each rank's samples (model in
eval mode), gathers the per-sample columns back into subset order on every rank, summarises
them with :meth:`Evaluator.summarize` and logs ``<prefix>/<key>`` with identical values on all
ranks. Every random stream of a sample is seeded from its dataset index inside the evaluator,
so 1 process and N processes log the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from tqdm.auto import tqdm

from robustattr.evaluation.base import Evaluator
from robustattr.evaluation.sharding import assign
from robustattr.utils import eval_mode

__all__ = ["EvalSubsetCallback"]

#: dtypes a per-sample column may have, by the code gathered across ranks.
_DTYPES: tuple[torch.dtype, ...] = (torch.bool, torch.int64, torch.int32, torch.float32, torch.float64)


class EvalSubsetCallback(Callback):
    """Evaluate ``evaluator`` on a fixed validation subset every ``every_n_epochs`` epochs.

    Args:
        evaluator: any :class:`~robustattr.evaluation.Evaluator` (e.g. ``CleanAccuracy()``).
        num_samples: size of the subset (capped at the validation set size).
        every_n_epochs: run after every n-th training epoch and the last (always under
            ``trainer.validate``).
        batch_size: samples evaluated together.
        seed: selects the subset (``randperm(len(val_set), seed)[:num_samples]``, sorted); the
            evaluator's own ``seed`` seeds its random streams.
        progress: progress bar (counting samples) on rank zero.
        prefix: logged keys are ``<prefix>/<summary key>``; default the class attribute
            ``prefix`` of a subclass, else ``val_<evaluator.name>``.

    After a run, ``last_results`` holds the gathered per-sample columns ``{column: [N]}`` plus
    ``index`` (dataset indices, subset order) and ``last_summary`` the evaluator's summary.
    Subclasses may override :meth:`log_keys` (which summary entries are logged, under which
    names) and :meth:`log_artifacts` (rank zero only: images, tables, plots).
    """

    prefix: str | None = None

    def __init__(
        self,
        evaluator: Evaluator,
        num_samples: int = 32,
        every_n_epochs: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = True,
        prefix: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(evaluator, Evaluator):
            raise ValueError(f"evaluator must be a robustattr.evaluation.Evaluator, got {type(evaluator).__name__}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefix is not None and (not prefix or prefix.endswith("/")):
            raise ValueError(f"prefix must be a non-empty name without a trailing '/', got {prefix!r}")
        self.evaluator = evaluator
        self.num_samples, self.every_n_epochs, self.batch_size = num_samples, every_n_epochs, batch_size
        self.seed, self.progress = seed, progress
        self.prefix = prefix or type(self).prefix or f"val_{evaluator.name}"
        self.last_results: dict[str, Tensor] | None = None
        self.last_summary: dict[str, float] | None = None

    # ---- what is logged ---------------------------------------------------------------
    def log_keys(self, summary: dict[str, float]) -> dict[str, float]:
        """Summary entries to log (keys without prefix). Default: all of them."""
        return dict(summary)

    def log_artifacts(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """Rank zero only: images, tables, plots. Default: nothing."""

    # ---- machinery ------------------------------------------------------------------------
    def subset_indices(self, dataset_len: int) -> Tensor:
        """Sorted indices of the fixed subset (depends only on ``seed`` and the set size)."""
        g = torch.Generator().manual_seed(self.seed)
        n = min(self.num_samples, dataset_len)
        return torch.randperm(dataset_len, generator=g)[:n].sort().values

    def should_run(self, trainer: L.Trainer) -> bool:
        """Not while sanity checking; every ``every_n_epochs`` epochs and the last under ``fit``; always otherwise."""
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != "fit":
            return True
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    @staticmethod
    def _val_dataset(trainer: L.Trainer) -> Any:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0]
        if loaders is None:
            raise RuntimeError("no validation dataloader: evaluation callbacks need one")
        return loaders.dataset

    @staticmethod
    def _model(pl_module: L.LightningModule) -> torch.nn.Module:
        """The network evaluated: ``pl_module.model`` (a RobustClassifier's network) or the module itself."""
        return getattr(pl_module, "model", pl_module)

    @staticmethod
    def load(dataset: Any, ids: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
        """``(x [b, C, H, W], y [b])`` of dataset items ``ids`` on ``device``."""
        items = [dataset[i] for i in ids]
        x = torch.stack([it[0] for it in items]).to(device)
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64, device=device)
        return x, y

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.should_run(trainer):
            return
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"{type(self).__name__} needs gradients at validation, but Lightning runs validation under "
                "torch.inference_mode. Construct the Trainer with inference_mode=False (train.py's default)."
            )
        summary = self.run(trainer, pl_module)
        for key, value in self.log_keys(summary).items():
            pl_module.log(f"{self.prefix}/{key}", torch.tensor(value, dtype=torch.float32, device=pl_module.device), sync_dist=True)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Evaluate this rank's share, gather, summarise; returns the summary (also ``last_summary``)."""
        dataset = self._val_dataset(trainer)
        indices = self.subset_indices(len(dataset)).tolist()
        rank, world = trainer.global_rank, trainer.world_size
        shares = assign(indices, world)
        local = shares[rank]
        model = self._model(pl_module)
        device = pl_module.device
        columns = self.evaluator.columns(getattr(pl_module, "num_classes", None))
        chunks: dict[str, list[Tensor]] = {c: [] for c in columns}
        bar = tqdm(total=len(local), desc=type(self).__name__, unit="sample", leave=False,
                   disable=not (self.progress and trainer.is_global_zero))
        with eval_mode(pl_module), torch.enable_grad():
            for s in range(0, len(local), self.batch_size):
                ids = local[s : s + self.batch_size]
                x, y = self.load(dataset, ids, device)
                out = self.evaluator.evaluate(model, x, y, torch.as_tensor(ids, dtype=torch.int64, device=device))
                self._check(out, columns, len(ids))
                for c in columns:
                    chunks[c].append(out[c].detach())
                bar.update(len(ids))
        bar.close()
        position = {i: p for p, i in enumerate(indices)}
        results = self.gather(pl_module, chunks, [[position[i] for i in share] for share in shares], rank, len(indices))
        results["index"] = torch.as_tensor(indices, dtype=torch.int64, device=device)
        self.last_results = results
        summary = self.evaluator.summarize(results)
        self.last_summary = summary
        if trainer.is_global_zero:
            self.log_artifacts(trainer, pl_module, results)
        return summary

    def _check(self, out: dict[str, Tensor], columns: list[str], b: int) -> None:
        if list(out) != columns:
            raise ValueError(f"{type(self.evaluator).__name__}.evaluate returned columns {list(out)}, but columns() lists {columns}")
        for c, v in out.items():
            if v.shape != (b,) or v.dtype not in _DTYPES:
                raise ValueError(f"{type(self.evaluator).__name__}: column {c!r} must be a flat [{b}] tensor of a supported dtype, got {tuple(v.shape)} {v.dtype}")

    @staticmethod
    def gather(
        pl_module: L.LightningModule, chunks: dict[str, list[Tensor]], positions: list[list[int]], rank: int, n_total: int
    ) -> dict[str, Tensor]:
        """Reassemble per-sample columns from all ranks in subset order, identically on every rank.

        ``positions[r]`` lists the subset positions rank r evaluated. Each rank pads its rows
        to the longest share, ``all_gather`` gives ``[W, rows]`` per column (sent as float64:
        exact for bool, int32 and int64 values below 2⁵³) and row j of rank r lands at
        ``positions[r][j]``. The dtype of each column travels as a code (ranks without samples
        send −1), so every rank restores the same dtypes.
        """
        world = len(positions)
        device = pl_module.device
        local = {c: torch.cat(v) if v else torch.zeros(0, device=device) for c, v in chunks.items()}
        if world == 1:
            order = torch.as_tensor(positions[0], dtype=torch.int64, device=device)
            return {c: torch.empty_like(v).index_copy_(0, order, v) if v.numel() else v for c, v in local.items()}
        rows = max(len(p) for p in positions)
        codes = torch.tensor(
            [_DTYPES.index(v.dtype) if chunks[c] else -1 for c, v in local.items()], dtype=torch.int64, device=device
        )
        codes = pl_module.all_gather(codes).reshape(world, -1).amax(dim=0).tolist()
        flat_pos = torch.as_tensor([p for share in positions for p in share], dtype=torch.int64, device=device)
        valid = torch.zeros(world, rows, dtype=torch.bool, device=device)
        for r, share in enumerate(positions):
            valid[r, : len(share)] = True
        out: dict[str, Tensor] = {}
        for (c, v), code in zip(local.items(), codes, strict=True):
            pad = torch.full((rows,), math.nan, dtype=torch.float64, device=device)
            pad[: v.shape[0]] = v.to(torch.float64)
            g = pl_module.all_gather(pad).reshape(world, rows)
            full = torch.empty(n_total, dtype=torch.float64, device=device)
            full[flat_pos] = g[valid]
            out[c] = full.to(_DTYPES[code]) if code >= 0 else full
        return out
