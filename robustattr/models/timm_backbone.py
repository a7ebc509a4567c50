"""Any timm classifier by name, with an optional CIFAR-style stem for 32x32 inputs."""

from __future__ import annotations

from typing import Any

from torch import nn


class TimmBackbone(nn.Module):
    """``nn.Module`` wrapper of :func:`timm_backbone` so YAML can name it by ``class_path``.

    Same arguments as :func:`timm_backbone`; ``forward``: ``[B, C, H, W]`` → logits ``[B, K]``.
    """

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int = 10,
        in_channels: int = 3,
        pretrained: bool = False,
        cifar_stem: bool = False,
    ) -> None:
        super().__init__()
        self.net = timm_backbone(name, num_classes, in_channels, pretrained, cifar_stem)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)


def timm_backbone(
    name: str = "resnet18",
    num_classes: int = 10,
    in_channels: int = 3,
    pretrained: bool = False,
    cifar_stem: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Create ``timm.create_model(name, ...)``; logits ``[B, num_classes]`` from ``[B, C, H, W]``.

    Args:
        name: any timm model name (``resnet18``, ``resnet50``, ``vit_tiny_patch16_224``, ...).
        num_classes: number of logits.
        in_channels: input channels.
        pretrained: load timm weights (needs network or a local cache; default False).
        cifar_stem: for ResNets on 32x32 inputs, replace the 7x7/stride-2 stem and the
            max-pool by a 3x3/stride-1 convolution and identity (the usual CIFAR ResNet).
        **kwargs: forwarded to ``timm.create_model``.
    """
    import timm  # here, not at module level: importing timm (and torchvision) costs seconds per process

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models()")
    model = timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **kwargs
    )
    if cifar_stem:
        conv1 = getattr(model, "conv1", None)
        if not isinstance(conv1, nn.Conv2d) or not hasattr(model, "maxpool"):
            raise ValueError(f"cifar_stem=True needs a ResNet-style model with conv1/maxpool, not {name!r}")
        model.conv1 = nn.Conv2d(in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model
