"""scikit-learn's bundled handwritten digits (1797 real 8×8 images), offline, upsampled to 28×28."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from robustattr.data.common import BaseDataModule, RandomShift, TensorImageDataset

#: Mean/std of the upsampled digits in [0, 1] (all 1797 images), for ``Normalize``.
DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3247,)


def load_digits_tensors(image_size: int = 28) -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``[N, 1, S, S]`` floats in [0, 1] (bilinear upsampling) and ``[N]`` labels."""
    from sklearn.datasets import load_digits

    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0), torch.tensor(bunch.target, dtype=torch.long)


class DigitsDataModule(BaseDataModule):
    """The default, offline dataset: fixed seeded train/val/test split of the 1797 digits.

    Args:
        batch_size: loader batch size.
        image_size: side length after upsampling (28 matches MNIST-shaped models).
        val_fraction, test_fraction: fractions of the 1797 images held out (seeded split).
        seed: split seed (the split never depends on the global RNG).
        augment: random shifts of up to 2 pixels on the training split.
        num_workers, pin_memory: DataLoader settings.
    """

    num_classes = 10
    in_channels = 1
    mean, std = DIGITS_MEAN, DIGITS_STD

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 28,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        augment: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"bad split fractions val={val_fraction}, test={test_fraction}")
        self.image_size = image_size
        self.val_fraction, self.test_fraction, self.seed, self.augment = val_fraction, test_fraction, seed, augment

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits_tensors(self.image_size)
        n = x.shape[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val, n_test = round(n * self.val_fraction), round(n * self.test_fraction)
        te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        self.train_set = TensorImageDataset(x[tr], y[tr], RandomShift(2) if self.augment else None)
        self.val_set = TensorImageDataset(x[va], y[va])
        self.test_set = TensorImageDataset(x[te], y[te])
