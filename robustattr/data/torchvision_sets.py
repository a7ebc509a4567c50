"""DataModules over torchvision's datasets: MNIST, FashionMNIST, CIFAR-10, GTSRB, Flowers102.

Every module yields ``[C, H, W]`` float images in ``[0, 1]`` (no normalisation: the model's
first layer is ``Normalize(mean, std)``, so every budget is in pixel space) and int64 labels.
Training augmentations are configurable; validation and test transforms are deterministic.
Datasets without a validation split get a seeded train/val split of the official training
set (the split never depends on the global RNG).

torchvision is imported lazily (inside ``prepare_data``/``setup``), so ``import
robustattr.data`` stays fast. Missing files raise one :class:`DatasetNotFoundError` that
names the dataset, the expected path and the ``download`` flag.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from robustattr.data.common import BaseDataModule, RandomShift, TensorImageDataset


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing (offline, or ``download=False``), or downloading failed."""


def dataset_not_found(
    name: str, path: Path | str, download: bool | None, detail: str = ""
) -> DatasetNotFoundError:
    """Build the one clear error every DataModule raises for missing data.

    Args:
        name: dataset name shown to the user (``"CIFAR10"``).
        path: where the files were expected.
        download: the ``download`` flag in force (``None``: the dataset cannot be downloaded).
        detail: the underlying library's message, kept short.
    """
    if download is None:
        hint = "download=False is the only option for this dataset: place the files at that path yourself"
    elif download:
        hint = (
            "download=True was set but the download failed (no network?). Download the files on a "
            "machine with network access and copy them to that path"
        )
    else:
        hint = "download=False: set download=True (needs network) or place the files at that path"
    msg = f"{name} dataset not found at '{path}'. {hint}."
    if detail:
        msg += f" (underlying error: {detail.strip().splitlines()[0][:200]})"
    return DatasetNotFoundError(msg)


# Errors torchvision raises for missing/corrupt files (RuntimeError), unreadable folders
# (OSError, FileNotFoundError) and failed downloads (URLError is an OSError; MNIST's mirror
# loop ends in RuntimeError).
_DATA_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, URLError, pickle.UnpicklingError, EOFError)


class ToFloat:
    """``uint8 [C, H, W]`` (or ``[H, W]``) → ``float32 [C, H, W]`` in ``[0, 1]``."""

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class RandomHorizontalFlip:
    """Flip ``[C, H, W]`` left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: Tensor) -> Tensor:
        return x.flip(-1) if torch.rand(()) < self.p else x


class Compose:
    """Apply callables in order (a tiny, picklable ``transforms.Compose`` for tensors)."""

    def __init__(self, fns: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.fns = list(fns)

    def __call__(self, x: Tensor) -> Tensor:
        for f in self.fns:
            x = f(x)
        return x


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(train, val)`` of a seeded random split of ``range(n)``; ``round(n·val_fraction)`` val."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")


class _TensorSetDataModule(BaseDataModule):
    """Datasets small enough to hold as one ``uint8 [N, C, H, W]`` tensor (MNIST-likes, CIFAR-10).

    Training augmentation (tensor ops, no PIL): random translation with zero padding of up
    to ``random_crop_padding`` pixels (= ``RandomCrop(size, padding)``), then a horizontal
    flip with probability 0.5 if ``horizontal_flip``. Val/test: none.
    """

    name: str = ""
    default_crop_padding: int = 0
    default_hflip: bool = False

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        random_crop_padding: int | None = None,
        horizontal_flip: bool | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        _check_fraction(val_fraction)
        pad = self.default_crop_padding if random_crop_padding is None else random_crop_padding
        if pad < 0:
            raise ValueError(f"random_crop_padding must be >= 0, got {pad}")
        self.data_dir, self.download = Path(data_dir), download
        self.val_fraction, self.seed, self.augment = val_fraction, seed, augment
        self.random_crop_padding = pad
        self.horizontal_flip = self.default_hflip if horizontal_flip is None else horizontal_flip

    # --- per dataset -------------------------------------------------------------------
    @property
    def expected_path(self) -> Path:
        """Folder the dataset's files are expected in."""
        raise NotImplementedError

    def _download(self) -> None:
        raise NotImplementedError

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """``uint8 [N, C, H, W]`` images and ``int64 [N]`` labels of the official train/test split."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------
    def train_transform(self) -> Callable[[Tensor], Tensor]:
        """The training transform (``ToFloat`` plus the configured augmentations)."""
        fns: list[Callable[[Tensor], Tensor]] = [ToFloat()]
        if self.augment and self.random_crop_padding > 0:
            fns.append(RandomShift(self.random_crop_padding))
        if self.augment and self.horizontal_flip:
            fns.append(RandomHorizontalFlip(0.5))
        return Compose(fns)

    def prepare_data(self) -> None:
        if not self.download or getattr(self, "_prepared", False):
            return
        try:
            self._download()
        except _DATA_ERRORS as e:
            raise dataset_not_found(self.name, self.expected_path, True, str(e)) from None
        self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.download:
            self.prepare_data()  # idempotent; covers use without a Trainer
        try:
            x_tr, y_tr = self._load(train=True)
            x_te, y_te = self._load(train=False)
        except _DATA_ERRORS as e:
            raise dataset_not_found(self.name, self.expected_path, self.download, str(e)) from None
        tr, va = seeded_split(x_tr.shape[0], self.val_fraction, self.seed)
        self.train_set = TensorImageDataset(x_tr[tr], y_tr[tr], self.train_transform())
        self.val_set = TensorImageDataset(x_tr[va], y_tr[va], ToFloat())
        self.test_set = TensorImageDataset(x_te, y_te, ToFloat())


class MNISTDataModule(_TensorSetDataModule):
    """MNIST (60k train / 10k test, 28×28 grey), files under ``<data_dir>/MNIST/raw``.

    Args:
        data_dir: root folder (torchvision layout).
        download: fetch the files if missing (needs network; default False).
        batch_size: loader batch size (default 128).
        val_fraction: fraction of the official training set held out as validation (seeded).
        seed: split seed.
        augment: enable training augmentations (default True).
        random_crop_padding: random translation in pixels (default 0 for MNIST: no augmentation).
        horizontal_flip: random left-right flip (default False: digits are not symmetric).
        num_workers, pin_memory: DataLoader settings.
    """

    name = "MNIST"
    num_classes, in_channels, image_size = 10, 1, 28
    mean, std = (0.1307,), (0.3081,)
    default_crop_padding, default_hflip = 0, False

    def _tv_class(self) -> Any:
        from torchvision.datasets import MNIST

        return MNIST

    @property
    def expected_path(self) -> Path:
        return self.data_dir / self.name / "raw"

    def _download(self) -> None:
        cls = self._tv_class()
        for train in (True, False):
            cls(str(self.data_dir), train=train, download=True)

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self._tv_class()(str(self.data_dir), train=train, download=False)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (60k/10k, 28×28 grey), files under ``<data_dir>/FashionMNIST/raw``.

    Same arguments as :class:`MNISTDataModule`; default augmentation: random translation by
    up to 2 pixels and horizontal flips (clothes are left-right symmetric).
    """

    name = "FashionMNIST"
    mean, std = (0.2860,), (0.3530,)
    default_crop_padding, default_hflip = 2, True

    def _tv_class(self) -> Any:
        from torchvision.datasets import FashionMNIST

        return FashionMNIST


_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = ["test_batch"]


def load_cifar10_batches(folder: Path, files: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Read CIFAR-10's pickled python batches: ``uint8 [N, 3, 32, 32]`` and ``int64 [N]``.

    Each file is a pickled dict with ``b"data"`` (``uint8 [n, 3072]``, channel-major rows)
    and ``b"labels"`` (list of n ints) — the official ``cifar-10-python.tar.gz`` format.
    Read directly (not through torchvision, whose md5 check would reject re-packed files).
    """
    xs, ys = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        if data is None or labels is None:
            raise RuntimeError(f"{folder / f} is not a CIFAR-10 batch (no data/labels)")
        xs.append(torch.as_tensor(data, dtype=torch.uint8).view(-1, 3, 32, 32))
        ys.append(torch.as_tensor(list(labels), dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


class CIFAR10DataModule(_TensorSetDataModule):
    """CIFAR-10 (50k/10k, 32×32 RGB), python batches under ``<data_dir>/cifar-10-batches-py``.

    Same arguments as :class:`MNISTDataModule`; default augmentation: the standard random
    crop with 4-pixel zero padding and horizontal flips.
    """

    name = "CIFAR10"
    num_classes, in_channels, image_size = 10, 3, 32
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    default_crop_padding, default_hflip = 4, True

    @property
    def expected_path(self) -> Path:
        return self.data_dir / "cifar-10-batches-py"

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(self.data_dir), train=True, download=True)  # verifies the archive's md5

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        return load_cifar10_batches(self.expected_path, _CIFAR_TRAIN if train else _CIFAR_TEST)


class _PILSetDataModule(BaseDataModule):
    """Datasets of variable-size images decoded by PIL; transforms are torchvision's."""

    name: str = ""

    def __init__(
        self, data_dir: str, download: bool, batch_size: int, num_workers: int, pin_memory: bool
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.data_dir, self.download = Path(data_dir), download

    @property
    def expected_path(self) -> Path:
        raise NotImplementedError

    def _make(self, split: str, transform: Any, download: bool) -> Dataset:
        raise NotImplementedError

    def _splits(self) -> tuple[str, ...]:
        raise NotImplementedError

    def prepare_data(self) -> None:
        if not self.download or getattr(self, "_prepared", False):
            return
        try:
            for s in self._splits():
                self._make(s, None, download=True)
        except _DATA_ERRORS as e:
            raise dataset_not_found(self.name, self.expected_path, True, str(e)) from None
        self._prepared = True

    def _build(self, split: str, transform: Any) -> Dataset:
        """The torchvision dataset of ``split`` (downloading first if ``download``), or the clear error."""
        self.prepare_data()
        try:
            return self._make(split, transform, download=False)
        except _DATA_ERRORS as e:
            raise dataset_not_found(self.name, self.expected_path, self.download, str(e)) from None


class GTSRBDataModule(_PILSetDataModule):
    """German Traffic Sign Recognition Benchmark (43 classes), under ``<data_dir>/gtsrb``.

    Images (15–250 px) are resized to ``image_size``² (default 32). Training augmentation:
    random crop with ``random_crop_padding`` (default 2) zero padding and a random rotation of
    up to ``rotation`` degrees (default 10); no flips (they change a sign's meaning).
    Validation: a seeded ``val_fraction`` of the official training set.

    Args:
        data_dir, download, batch_size, num_workers, pin_memory: as in :class:`MNISTDataModule`.
        image_size: side length after resizing.
        val_fraction, seed: the train/val split.
        augment, random_crop_padding, rotation: training augmentations.
    """

    name = "GTSRB"
    num_classes, in_channels = 43, 3
    mean, std = (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 128,
        image_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        random_crop_padding: int = 2,
        rotation: float = 10.0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(data_dir, download, batch_size, num_workers, pin_memory)
        _check_fraction(val_fraction)
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if random_crop_padding < 0:
            raise ValueError(f"random_crop_padding must be >= 0, got {random_crop_padding}")
        if rotation < 0:
            raise ValueError(f"rotation must be >= 0, got {rotation}")
        self.image_size, self.val_fraction, self.seed = image_size, val_fraction, seed
        self.augment, self.random_crop_padding, self.rotation = augment, random_crop_padding, rotation

    @property
    def expected_path(self) -> Path:
        return self.data_dir / "gtsrb"

    def _splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def _make(self, split: str, transform: Any, download: bool) -> Dataset:
        from torchvision.datasets import GTSRB

        return GTSRB(str(self.data_dir), split=split, transform=transform, download=download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        import torchvision.transforms as T

        s = self.image_size
        eval_tf = T.Compose([T.Resize((s, s)), T.ToTensor()])
        aug: list[Any] = [T.Resize((s, s))]
        if self.augment and self.rotation > 0:
            aug.append(T.RandomRotation(self.rotation))
        if self.augment and self.random_crop_padding > 0:
            aug.append(T.RandomCrop(s, padding=self.random_crop_padding))
        train_tf = T.Compose([*aug, T.ToTensor()])
        full_train, full_eval = self._build("train", train_tf), self._build("train", eval_tf)
        tr, va = seeded_split(len(full_train), self.val_fraction, self.seed)  # type: ignore[arg-type]
        self.train_set = Subset(full_train, tr.tolist())
        self.val_set = Subset(full_eval, va.tolist())
        self.test_set = self._build("test", eval_tf)


def imagenet_transforms(image_size: int, resize_size: int, augment: bool, horizontal_flip: bool) -> tuple[Any, Any]:
    """ImageNet-style ``(train, eval)`` transforms producing ``[3, S, S]`` in ``[0, 1]``.

    Train: ``RandomResizedCrop(S)`` (+ ``RandomHorizontalFlip``) if ``augment`` else the eval
    transform; eval: ``Resize(resize_size)`` then ``CenterCrop(S)``. No normalisation.
    """
    import torchvision.transforms as T

    eval_tf = T.Compose([T.Resize(resize_size), T.CenterCrop(image_size), T.ToTensor()])
    if not augment:
        return eval_tf, eval_tf
    aug: list[Any] = [T.RandomResizedCrop(image_size)]
    if horizontal_flip:
        aug.append(T.RandomHorizontalFlip())
    return T.Compose([*aug, T.ToTensor()]), eval_tf


def _check_sizes(image_size: int, resize_size: int) -> None:
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if resize_size < image_size:
        raise ValueError(f"resize_size must be >= image_size={image_size}, got {resize_size}")


class Flowers102DataModule(_PILSetDataModule):
    """Oxford 102 Flowers (official train/val/test splits), under ``<data_dir>/flowers-102``.

    Training: ``RandomResizedCrop(image_size)`` + horizontal flip; eval: ``Resize(resize_size)``
    + ``CenterCrop(image_size)``. ImageNet mean/std (the usual choice for transfer).

    Args:
        data_dir, download, batch_size, num_workers, pin_memory: as in :class:`MNISTDataModule`.
        image_size: crop side (default 224). resize_size: eval resize (default 256).
        augment, horizontal_flip: training augmentations.
    """

    name = "Flowers102"
    num_classes, in_channels = 102, 3
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 64,
        image_size: int = 224,
        resize_size: int = 256,
        augment: bool = True,
        horizontal_flip: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(data_dir, download, batch_size, num_workers, pin_memory)
        _check_sizes(image_size, resize_size)
        self.image_size, self.resize_size = image_size, resize_size
        self.augment, self.horizontal_flip = augment, horizontal_flip

    @property
    def expected_path(self) -> Path:
        return self.data_dir / "flowers-102"

    def _splits(self) -> tuple[str, ...]:
        return ("train", "val", "test")

    def _make(self, split: str, transform: Any, download: bool) -> Dataset:
        from torchvision.datasets import Flowers102

        return Flowers102(str(self.data_dir), split=split, transform=transform, download=download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_tf, eval_tf = imagenet_transforms(self.image_size, self.resize_size, self.augment, self.horizontal_flip)
        self.train_set = self._build("train", train_tf)
        self.val_set = self._build("val", eval_tf)
        self.test_set = self._build("test", eval_tf)
