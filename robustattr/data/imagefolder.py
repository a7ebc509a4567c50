"""ImageNet-layout folders: ``<data_dir>/train/<class>/*.JPEG``, ``<data_dir>/val/<class>/*``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from robustattr.data.common import BaseDataModule
from robustattr.data.torchvision_sets import (
    _DATA_ERRORS,
    _check_sizes,
    dataset_not_found,
    imagenet_transforms,
)


class ImageFolderDataModule(BaseDataModule):
    """Any image-classification folder in the ImageNet layout (e.g. ILSVRC-2012 after the usual
    ``valprep.sh``): one sub-folder per class, classes sorted by folder name → label index.

    Splits: ``train`` = ``<data_dir>/train``; ``val`` = ``<data_dir>/val``; ``test`` =
    ``<data_dir>/test`` if that folder exists, else the ``val`` folder (ImageNet has no
    labelled test set). Images are RGB ``[3, S, S]`` in ``[0, 1]``.

    Training transform: ``RandomResizedCrop(image_size)`` + ``RandomHorizontalFlip`` (each
    configurable); eval: ``Resize(resize_size)`` + ``CenterCrop(image_size)``.

    Args:
        data_dir: root holding ``train/`` and ``val/``.
        num_classes: number of classes (must equal the number of class folders; needed before
            ``setup`` because the model is built from it).
        download: must be False (there is nothing to download; kept for a uniform interface).
        batch_size: loader batch size (default 256).
        image_size: crop side (default 224); resize_size: eval resize (default 256).
        augment, horizontal_flip: training augmentations.
        mean, std: per-channel statistics for the model's ``Normalize`` (default ImageNet's).
        num_workers, pin_memory: DataLoader settings (use several workers for JPEG decoding).
    """

    name = "ImageFolder"
    in_channels = 3

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        num_classes: int = 1000,
        download: bool = False,
        batch_size: int = 256,
        image_size: int = 224,
        resize_size: int = 256,
        augment: bool = True,
        horizontal_flip: bool = True,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        num_workers: int = 8,
        pin_memory: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if download:
            raise ValueError("download=True is not supported by ImageFolderDataModule: place the folders yourself")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 entries (RGB), got {mean} and {std}")
        _check_sizes(image_size, resize_size)
        self.data_dir, self.download, self.num_classes = Path(data_dir), download, num_classes
        self.image_size, self.resize_size = image_size, resize_size
        self.augment, self.horizontal_flip = augment, horizontal_flip
        self.mean, self.std = tuple(mean), tuple(std)

    def _folder(self, split: str, transform: Any) -> Dataset:
        from torchvision.datasets import ImageFolder

        path = self.data_dir / split
        if not path.is_dir():
            raise dataset_not_found(f"{self.name} ({split} split)", path, None)
        try:
            ds = ImageFolder(str(path), transform=transform)
        except _DATA_ERRORS as e:
            raise dataset_not_found(f"{self.name} ({split} split)", path, None, str(e)) from None
        if len(ds.classes) != self.num_classes:
            raise ValueError(
                f"{path} has {len(ds.classes)} class folders but num_classes={self.num_classes}"
            )
        return ds

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_tf, eval_tf = imagenet_transforms(self.image_size, self.resize_size, self.augment, self.horizontal_flip)
        self.train_set = self._folder("train", train_tf)
        self.val_set = self._folder("val", eval_tf)
        test_split = "test" if (self.data_dir / "test").is_dir() else "val"
        self.test_set = self._folder(test_split, eval_tf)
