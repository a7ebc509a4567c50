"""EvalSubsetCallback under 2-process gloo DDP equals 1 process (each sample once, same noise)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from robustattr.attributions import sample_l2_ball
from robustattr.evaluation import Evaluator
from robustattr.lightning import EvalSubsetCallback, RobustClassifier
from robustattr.utils import per_sample_noise


class _NoisyGrad(Evaluator):
    """Per-sample: gradient norm at a per-sample-seeded noisy point, and the dataset index."""

    seed = 3

    def columns(self, num_classes=None):  # type: ignore[no-untyped-def]
        return ["gnorm", "idx"]

    def evaluate(self, model, x, y, index):  # type: ignore[no-untyped-def]
        eta = per_sample_noise(sample_l2_ball, index + self.seed, 1, tuple(x.shape[1:]), x.device, radius=0.3)[0]
        xr = (x + eta).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xr).gather(1, y[:, None]).sum(), xr)
        return {"gnorm": g.flatten(1).norm(dim=1), "idx": index.to(torch.float64)}

    def summarize(self, results):  # type: ignore[no-untyped-def]
        return {
            "gnorm_mean": float(results["gnorm"].mean()),
            "gnorm_median": float(results["gnorm"].median()),
            "n": float(results["gnorm"].numel()),
            "idx_sum": float(results["idx"].sum()),
        }


def _validate(tmp_path: Path, devices: int) -> dict[str, float]:
    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(), mean=dm.mean, std=dm.std)
    cb = EvalSubsetCallback(_NoisyGrad(), num_samples=25, batch_size=4, seed=3, progress=False, prefix="val_toy")  # 25: odd, uneven shards
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, inference_mode=False,
        default_root_dir=tmp_path, limit_val_batches=2, callbacks=[cb],
    )
    trainer.validate(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_toy/")}


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    one = _validate(tmp_path / "one", 1)
    two = _validate(tmp_path / "two", 2)
    assert set(one) == {"val_toy/gnorm_mean", "val_toy/gnorm_median", "val_toy/n", "val_toy/idx_sum"}
    assert one["val_toy/n"] == 25 and two["val_toy/n"] == 25  # each sample exactly once
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6), k
