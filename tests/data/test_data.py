"""DataModules: digits split, clear errors for missing torchvision data, fake on-disk datasets."""

from __future__ import annotations

import pickle
import re
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from robustattr.data import (
    CIFAR10DataModule,
    DatasetNotFoundError,
    DigitsDataModule,
    FashionMNISTDataModule,
    Flowers102DataModule,
    GTSRBDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

# --------------------------------------------------------------------------- digits


def test_digits_split_is_deterministic_disjoint_and_complete() -> None:
    a, b = DigitsDataModule(seed=0), DigitsDataModule(seed=0)
    a.setup(), b.setup()
    assert torch.equal(a.val_set.images, b.val_set.images) and torch.equal(a.val_set.labels, b.val_set.labels)
    sizes = [len(a.train_set), len(a.val_set), len(a.test_set)]
    assert sum(sizes) == 1797
    assert sizes[1] == round(1797 * 0.15) and sizes[2] == round(1797 * 0.15)
    # The three splits partition the 1797 images: same multiset of (image, label) rows as the source.
    from robustattr.data import load_digits_tensors

    x_all, y_all = load_digits_tensors(28)
    full = torch.cat([x_all.flatten(1), y_all[:, None].float()], dim=1)
    parts = torch.cat([
        torch.cat([ds.images.flatten(1), ds.labels[:, None].float()], dim=1)
        for ds in (a.train_set, a.val_set, a.test_set)
    ])
    assert torch.equal(torch.unique(full, dim=0, return_counts=True)[1].sort().values,
                       torch.unique(parts, dim=0, return_counts=True)[1].sort().values)
    assert torch.equal(torch.unique(full, dim=0), torch.unique(parts, dim=0))
    c = DigitsDataModule(seed=1)
    c.setup()
    assert not torch.equal(a.val_set.labels, c.val_set.labels)


def test_digits_shapes_range_and_loader() -> None:
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) <= 9
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)


# --------------------------------------------------------------------------- clear errors

MODULES = [MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule, GTSRBDataModule, Flowers102DataModule]


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_missing_dataset_raises_one_clear_error(cls: type, tmp_path: Path) -> None:
    dm = cls(data_dir=str(tmp_path), download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert dm.name in msg
    assert str(tmp_path) in msg
    assert "download=False" in msg and "download=True" in msg
    assert isinstance(info.value, FileNotFoundError)
    # One error, not a chained stack trace from inside torchvision.
    assert info.value.__cause__ is None and info.value.__suppress_context__
    tb = "".join(traceback.format_exception(info.value))
    assert "During handling of the above exception" not in tb
    assert list(tmp_path.iterdir()) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))  # nothing downloaded


def test_missing_imagefolder_raises_clear_error(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(tmp_path), num_classes=2, num_workers=0)
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "train"))) as info:
        dm.setup()
    assert "ImageFolder" in str(info.value) and "download" in str(info.value)
    with pytest.raises(ValueError, match="download"):
        ImageFolderDataModule(data_dir=str(tmp_path), download=True)


def test_invalid_hyperparameters_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        CIFAR10DataModule(data_dir=str(tmp_path), val_fraction=1.5)
    with pytest.raises(ValueError, match="random_crop_padding"):
        CIFAR10DataModule(data_dir=str(tmp_path), random_crop_padding=-1)
    with pytest.raises(ValueError, match="resize_size"):
        Flowers102DataModule(data_dir=str(tmp_path), image_size=224, resize_size=100)
    with pytest.raises(ValueError, match="num_classes"):
        ImageFolderDataModule(data_dir=str(tmp_path), num_classes=1)


# --------------------------------------------------------------------------- fake CIFAR-10


def _write_fake_cifar(root: Path, n_per_batch: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": []}, fh)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return written


def test_fake_cifar10_loads_in_official_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = _write_fake_cifar(tmp_path, 8, rng)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_fraction=0.25, seed=3, augment=False, batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 8)
    # Independent reference: decode test_batch row 5 by hand (R plane, G plane, B plane, row-major).
    data, labels = written["test_batch"]
    ref = torch.from_numpy(data[5].reshape(3, 32, 32).astype(np.float32) / 255.0)
    x, y = dm.test_set[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, ref) and int(y) == labels[5]
    # train ∪ val is exactly the five training batches (as a multiset of (image, label))
    train_rows = {(written[f"data_batch_{i}"][0][j].tobytes(), written[f"data_batch_{i}"][1][j]) for i in range(1, 6) for j in range(8)}
    got = set()
    for ds in (dm.train_set, dm.val_set):
        for k in range(len(ds)):
            xi, yi = ds[k]
            got.add(((xi * 255).round().to(torch.uint8).numpy().reshape(-1).tobytes(), int(yi)))
    assert got == train_rows
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 32, 32) and yb.shape == (4,) and 0.0 <= float(xb.min()) and float(xb.max()) <= 1.0
    # seeded split: same seed → same val set
    dm2 = CIFAR10DataModule(data_dir=str(tmp_path), val_fraction=0.25, seed=3)
    dm2.setup()
    assert torch.equal(dm2.val_set.images, dm.val_set.images)


def test_cifar10_train_augmentation_is_crop_and_flip_of_original(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path, 4, np.random.default_rng(1))
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_fraction=0.25, random_crop_padding=4, horizontal_flip=True)
    dm.setup()
    raw = dm.train_set.images[0].float() / 255.0
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    candidates = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    candidates += [c.flip(-1) for c in candidates]
    torch.manual_seed(0)
    for _ in range(5):
        x, _ = dm.train_set[0]
        assert any(torch.equal(x, c) for c in candidates)


# --------------------------------------------------------------------------- fake ImageFolder


def test_fake_imagefolder_loads_with_labels(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    classes = ["ant", "bee", "cat"]
    colours = {}
    for split, n in (("train", 3), ("val", 2)):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            for k in range(n):
                arr = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / c / f"img{k}.png")
                colours[(split, c, k)] = arr
    dm = ImageFolderDataModule(
        data_dir=str(tmp_path), num_classes=3, image_size=32, resize_size=32, batch_size=4, num_workers=0,
        pin_memory=False,
    )
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 6, 6)
    # Labels follow sorted class folder names; eval transform = resize shorter side to 32 + centre crop.
    for idx in range(len(dm.val_set)):
        x, y = dm.val_set[idx]
        assert x.shape == (3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        path = Path(dm.val_set.samples[idx][0])
        assert classes[int(y)] == path.parent.name
    # Independent reference for one image: PIL resize (bilinear, shorter side → 32) + centre crop.
    x0, _ = dm.val_set[0]
    img = Image.open(dm.val_set.samples[0][0]).convert("RGB")
    w, h = img.size  # 48 x 40 → 38 x 32
    ref_img = img.resize((round(w * 32 / h), 32), Image.BILINEAR)
    W = ref_img.size[0]
    left = int(round((W - 32) / 2.0))
    ref = torch.from_numpy(np.asarray(ref_img)[:, left : left + 32].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.allclose(x0, ref, atol=2 / 255)
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.long
    wrong = ImageFolderDataModule(data_dir=str(tmp_path), num_classes=5, num_workers=0)
    with pytest.raises(ValueError, match="num_classes"):
        wrong.setup()


# --------------------------------------------------------------------------- download offline, configs


@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule, GTSRBDataModule], ids=lambda c: c.__name__)
def test_download_true_offline_raises_clear_error(cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request
    from urllib.error import URLError

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("simulated: no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = cls(data_dir=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    msg = str(info.value)
    assert dm.name in msg and str(tmp_path) in msg and "download=True" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("config", "dm_name", "k"),
    [("mnist_smallcnn", "MNISTDataModule", 10), ("cifar10_resnet18", "CIFAR10DataModule", 10),
     ("imagenet_resnet50", "ImageFolderDataModule", 1000)],
)
def test_configs_instantiate_and_link_data_statistics(config: str, dm_name: str, k: int) -> None:
    from robustattr.apps.train import build_cli

    path = Path(__file__).resolve().parents[2] / "configs" / "experiment" / f"{config}.yaml"
    cli = build_cli(["--config", str(path), "--trainer.logger", "false"], run=False)
    dm = cli.datamodule
    assert type(dm).__name__ == dm_name and dm.download is False
    norm = cli.model.model[0]
    torch.testing.assert_close(norm.mean.flatten(), torch.tensor(dm.mean))
    torch.testing.assert_close(norm.std.flatten(), torch.tensor(dm.std))
    assert cli.model.model(torch.rand(1, dm.in_channels, dm.image_size, dm.image_size)).shape == (1, k)


def test_fake_cifar10_trains_with_lightning_fast_dev_run(tmp_path: Path) -> None:
    import lightning as L

    from robustattr.lightning.module import RobustClassifier
    from robustattr.models import SmallCNN

    _write_fake_cifar(tmp_path / "data", 8, np.random.default_rng(2))
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "data"), val_fraction=0.25, batch_size=4)
    torch.manual_seed(0)
    model = RobustClassifier(SmallCNN(in_channels=3, input_size=32, width=4, hidden=8), num_classes=10,
                             mean=dm.mean, std=dm.std)
    trainer = L.Trainer(fast_dev_run=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", inference_mode=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished and trainer.global_step == 2
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert 0.0 <= float(metrics["val/acc"]) <= 1.0
