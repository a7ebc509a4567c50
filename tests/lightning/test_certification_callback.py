"""CertificationCallback: logged keys and values, W&B offline run, inference-mode guard."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from robustattr.certify import UniformSmoothingCertifier
from robustattr.evaluation import SmoothingEvaluator
from robustattr.lightning import CertificationCallback, RobustClassifier

EPS = [1e-4, 1e-3, 1e-2]
TAUS = [0.5, 0.9]


def _setup():  # type: ignore[no-untyped-def]
    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(width=8, hidden=32), mean=dm.mean, std=dm.std)
    ev = SmoothingEvaluator(radius=0.3, n_samples=40, eps_grid=EPS, taus=TAUS, seed=3)
    cb = CertificationCallback(ev, num_samples=6, batch_size=4, seed=3, progress=False)
    return dm, model, cb


def test_keys_and_values_match_direct_certification(tmp_path: Path) -> None:
    dm, model, cb = _setup()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        inference_mode=False, default_root_dir=tmp_path, limit_val_batches=1, callbacks=[cb],
    )
    trainer.validate(model, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_cert/")}
    expected_keys = {f"val_cert/cos_lower@eps={e:g}" for e in EPS}
    expected_keys |= {f"val_cert/frac_certified@tau={t:g},eps={e:g}" for t in TAUS for e in EPS}
    expected_keys |= {f"val_cert/eps_max@tau={t:g}" for t in TAUS} | {"val_cert/h_norm_lower"}
    assert set(logged) == expected_keys

    # independent recomputation: the same subset, certified one sample at a time, summarised with numpy
    ds = dm.val_set
    idx = cb.subset_indices(len(ds))
    assert idx.numel() == 6
    cert = UniformSmoothingCertifier(radius=0.3, n_samples=40, eps_grid=EPS, taus=TAUS, seed=3, batch_size=7)
    rows_cos, rows_em = [], []
    model.eval()
    for i in idx.tolist():
        x = ds[i][0].unsqueeze(0)
        c = cert.certify(model.model, x, index=torch.tensor([i]))
        rows_cos.append(c.cos_lower[0].numpy())
        rows_em.append(c.eps_max[0].numpy())
    cos = np.nan_to_num(np.stack(rows_cos), nan=-1.0)
    em = np.nan_to_num(np.stack(rows_em), nan=0.0)
    for j, e in enumerate(EPS):
        # torch.median returns the lower middle value for even counts
        assert logged[f"val_cert/cos_lower@eps={e:g}"] == pytest.approx(np.sort(cos[:, j])[(6 - 1) // 2], rel=1e-5)
        for t in TAUS:
            assert logged[f"val_cert/frac_certified@tau={t:g},eps={e:g}"] == pytest.approx((cos[:, j] >= t).mean())
    for k, t in enumerate(TAUS):
        assert logged[f"val_cert/eps_max@tau={t:g}"] == pytest.approx(np.sort(em[:, k])[(6 - 1) // 2], rel=1e-5)


def test_keys_in_offline_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    dm, model, cb = _setup()
    logger = WandbLogger(project="robustattr-test", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger,
        enable_checkpointing=False, enable_progress_bar=False, inference_mode=False, default_root_dir=tmp_path, callbacks=[cb],
    )
    trainer.fit(model, datamodule=dm)
    run_dir = Path(logger.experiment.dir).parent
    import wandb

    wandb.finish()
    wanted = [b"val_cert/cos_lower@eps=0.001", b"val_cert/eps_max@tau=0.9", b"val_cert/cos_lower_curve"]  # last: the plot
    deadline = time.time() + 60  # the W&B service process may still be writing the offline run file
    while True:
        blobs = b"".join(p.read_bytes() for p in run_dir.rglob("*.wandb"))
        if all(w in blobs for w in wanted) or time.time() > deadline:
            break
        time.sleep(0.5)
    for w in wanted:
        assert w in blobs, w


def test_inference_mode_is_refused(tmp_path: Path) -> None:
    dm, model, cb = _setup()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        inference_mode=True, default_root_dir=tmp_path, limit_val_batches=1, callbacks=[cb],
    )
    with pytest.raises(RuntimeError, match="inference_mode"):
        trainer.validate(model, datamodule=dm)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="radius"):
        CertificationCallback(SmoothingEvaluator(radius=0.0))
    with pytest.raises(ValueError, match="taus"):
        CertificationCallback(SmoothingEvaluator(taus=[1.5]))
    with pytest.raises(ValueError, match="margin"):
        CertificationCallback(SmoothingEvaluator(margin="best"))
    # the margin is passed through; "auto" resolves from N alone
    assert CertificationCallback(SmoothingEvaluator(n_samples=256)).evaluator.certifier.margin_method == "bernstein"
    assert CertificationCallback(SmoothingEvaluator(n_samples=64)).evaluator.certifier.margin_method == "hoeffding"
    assert CertificationCallback(SmoothingEvaluator(n_samples=256, margin="hoeffding")).evaluator.certifier.margin_method == "hoeffding"


def _validate(tmp_path: Path, devices: int) -> dict[str, float]:
    dm, model, _ = _setup()
    ev = SmoothingEvaluator(radius=0.3, n_samples=300, eps_grid=EPS, taus=TAUS, seed=3)
    cb = CertificationCallback(ev, num_samples=5, batch_size=2, seed=3, progress=False)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, inference_mode=False, default_root_dir=tmp_path,
        limit_val_batches=1, callbacks=[cb],
    )
    trainer.validate(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_cert/")}


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    """5 samples (uneven shards over 2 ranks): every logged value equals the 1-process run."""
    one = _validate(tmp_path / "one", 1)
    two = _validate(tmp_path / "two", 2)
    assert set(one) == set(two) and len(one) == 3 + 6 + 2 + 1
    assert one["val_cert/frac_certified@tau=0.5,eps=0.0001"] > 0  # N = 300 certifies something
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-7), k
