"""WorstCaseBoundCallback: keys, values against direct computation, 2-process gloo DDP = 1 process."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from robustattr.attributions import InputXGradient
from robustattr.bounds import worst_case_bounds
from robustattr.evaluation import BoundsEvaluator
from robustattr.lightning import RobustClassifier, WorstCaseBoundCallback

EPS = {"l2": 0.1, "linf": 0.01}


def _setup(norms: tuple[str, ...], full_jacobian_limit: int = 4096):  # type: ignore[no-untyped-def]
    from robustattr.data import DigitsDataModule
    from robustattr.models import SmallCNN

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = RobustClassifier(SmallCNN(width=4, hidden=16), mean=dm.mean, std=dm.std)
    # smooth_pool=False: the reference below is worst_case_bounds on the ReLU→softplus surrogate only
    # (the default max-pool smoothing is compared with its own reference in tests/evaluation)
    ev = BoundsEvaluator(InputXGradient(), norms=norms, eps=EPS, seed=5, full_jacobian_limit=full_jacobian_limit, smooth_pool=False)
    cb = WorstCaseBoundCallback(ev, num_samples=7, batch_size=3, seed=5, progress=False)
    return dm, model, cb


def _validate(
    tmp_path: Path, devices: int, norms: tuple[str, ...] = ("l2", "linf"), full_jacobian_limit: int = 4096
) -> tuple[dict[str, float], WorstCaseBoundCallback, RobustClassifier, object]:
    dm, model, cb = _setup(norms, full_jacobian_limit)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, inference_mode=False,
        default_root_dir=tmp_path, limit_val_batches=1, callbacks=[cb],
    )
    trainer.validate(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_bound/")}, cb, model, dm


def test_single_process_values_match_direct_bounds(tmp_path: Path) -> None:
    metrics, cb, model, dm = _validate(tmp_path, 1, norms=("l2",))
    assert set(metrics) == {
        "val_bound/xi_max", "val_bound/xi_max_max", "val_bound/T_e", "val_bound/T_e_max", "val_bound/T_e_prime",
        "val_bound/T_e_prime_max", "val_bound/T_c_deg", "val_bound/T_c_deg_max", "val_bound/T_c_vacuous_frac",
    }
    # reference: the same subset, one batch, default random start (Lanczos result does not depend on it)
    idx = cb.subset_indices(len(dm.val_set))
    x = torch.stack([dm.val_set[int(i)][0] for i in idx])
    y = torch.tensor([int(dm.val_set[int(i)][1]) for i in idx])
    with pytest.warns(UserWarning, match="surrogate"):
        ref = worst_case_bounds(InputXGradient(), model.model.eval(), x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
    assert metrics["val_bound/xi_max"] == pytest.approx(float(ref.xi_max.mean()), rel=1e-4)
    assert metrics["val_bound/T_e_max"] == pytest.approx(float(ref.T_e.max()), rel=1e-4)
    assert metrics["val_bound/T_e_prime"] == pytest.approx(float(ref.T_e_prime.mean()), rel=1e-4)
    assert metrics["val_bound/T_c_vacuous_frac"] == pytest.approx(float(ref.vacuous.float().mean()))
    assert metrics["val_bound/T_c_deg"] == pytest.approx(float(ref.T_c_deg.nanmean()), rel=1e-3)
    assert metrics["val_bound/T_e"] == pytest.approx(0.1 * metrics["val_bound/xi_max"], rel=1e-5)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="eps"):
        WorstCaseBoundCallback(BoundsEvaluator(eps=0.0))
    with pytest.raises(ValueError, match="norms"):
        WorstCaseBoundCallback(BoundsEvaluator(norms=("l1",)))
    with pytest.raises(ValueError, match="eps"):
        WorstCaseBoundCallback(BoundsEvaluator(norms=("l2", "linf"), eps={"l2": 0.1}))
    with pytest.raises(ValueError, match="iters"):
        WorstCaseBoundCallback(BoundsEvaluator(iters=0))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    # full_jacobian_limit=100 < d=784 keeps the ℓ∞ term at √d·ξ_max (the Σ|P_ij| path is
    # per-sample and covered in test_worst_case.py); this keeps the test under a minute
    one, cb1, _, _ = _validate(tmp_path / "one", 1, full_jacobian_limit=100)
    two, _, _, _ = _validate(tmp_path / "two", 2, full_jacobian_limit=100)
    assert "val_bound/linf/T_e" in one and "val_bound/l2/T_c_deg" in one and "val_bound/xi_max" in one
    assert cb1.last_results is not None and cb1.last_results["xi_max"].shape == (7,)
    assert set(one) == set(two)
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-4, abs=1e-7, nan_ok=True), k
