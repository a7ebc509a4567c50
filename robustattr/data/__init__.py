"""LightningDataModules: bundled digits (default, offline), torchvision sets, ImageFolder."""

from robustattr.data.common import BaseDataModule, TensorImageDataset
from robustattr.data.digits import DigitsDataModule, load_digits_tensors
from robustattr.data.imagefolder import ImageFolderDataModule
from robustattr.data.torchvision_sets import (
    CIFAR10DataModule,
    DatasetNotFoundError,
    FashionMNISTDataModule,
    Flowers102DataModule,
    GTSRBDataModule,
    MNISTDataModule,
)

__all__ = [
    "BaseDataModule",
    "CIFAR10DataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "Flowers102DataModule",
    "GTSRBDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "TensorImageDataset",
    "load_digits_tensors",
]
