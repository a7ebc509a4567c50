"""The MNIST network of Wang & Kong (CVPR 2023, arXiv:2303.00340): four convolutions followed by three fully connected layers."""

from __future__ import annotations

from torch import Tensor, nn


def _spatial_after(size: int) -> int:
    """Side length after conv3-conv3-pool2-conv3-conv3-pool2 (valid padding)."""
    s = ((size - 4) // 2 - 4) // 2
    if s < 1:
        raise ValueError(f"SmallCNN needs inputs of at least 14x14 pixels, got {size}")
    return s


class SmallCNN(nn.Module):
    """conv(32)-conv(32)-pool-conv(64)-conv(64)-pool-fc(200)-fc(200)-fc(K), ReLU activations.

    Args:
        in_channels: C of the input ``[B, C, H, W]``.
        num_classes: K, the number of logits.
        input_size: H (= W) of the input; 28 for MNIST-shaped data, 32 for CIFAR.
        width: channels of the first two convolutions (the last two use ``2 * width``).
        hidden: width of the two hidden fully connected layers.
        pool: ``"max"`` (the paper's network) or ``"avg"``. The softplus surrogate used by the
            attacks and the worst-case bounds replaces max-pooling by log-mean-exp pooling by
            default, so both are smooth; with ``smooth_pool=False`` max-pooling's gradient jumps
            and first-order bounds are routinely exceeded (``"avg"`` avoids the question).

    Returns logits ``[B, K]``. No BatchNorm, so DDP gradients are exactly per-sample sums.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        width: int = 32,
        hidden: int = 200,
        pool: str = "max",
    ) -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        s = _spatial_after(input_size)
        Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3), nn.ReLU(),
            nn.Conv2d(width, width, 3), nn.ReLU(),
            Pool(2),
            nn.Conv2d(width, 2 * width, 3), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3), nn.ReLU(),
            Pool(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * s * s, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
