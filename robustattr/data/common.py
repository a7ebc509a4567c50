"""Shared pieces of the DataModules: a tensor dataset with a transform and loader settings."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class TensorImageDataset(Dataset):
    """``(images[i], labels[i])`` with an optional per-item transform. images ``[N, C, H, W]``."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


class RandomShift:
    """Random translation by up to ``pixels`` in each direction (zero padding); ``[C,H,W]``."""

    def __init__(self, pixels: int = 2) -> None:
        if pixels < 0:
            raise ValueError(f"pixels must be >= 0, got {pixels}")
        self.pixels = pixels

    def __call__(self, x: Tensor) -> Tensor:
        p = self.pixels
        if p == 0:
            return x
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
        return padded[:, i : i + x.shape[1], j : j + x.shape[2]]


class BaseDataModule(L.LightningDataModule):
    """Loader settings shared by every DataModule; subclasses set ``train_set``/``val_set``/``test_set``.

    Attributes every DataModule exposes (used by callbacks and ``certify.py``):
    ``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std``.
    """

    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __init__(self, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, ds: Dataset | None, shuffle: bool) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def split(self, name: str) -> Dataset:
        """The ``train``/``val``/``test`` dataset (after ``setup``)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        if getattr(self, f"{name}_set") is None:
            self.setup("fit" if name != "test" else "test")
        ds = getattr(self, f"{name}_set")
        if ds is None:
            raise RuntimeError(f"{type(self).__name__} has no {name} split")
        return ds
