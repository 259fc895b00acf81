"""The paper's ResNets, built by torchvision so their state dicts are torchvision's.

Reusing torchvision's ResNet keeps every key and shape identical to a torchvision ``.pth``, so a
pretrained dense checkpoint loads directly as the starting point of pruning. Only the stem can be
adapted: ``in_channels`` for datasets that are not RGB, ``small_input`` for 28x28 / 32x32 images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
import torchvision
from torchvision.models.resnet import ResNet

# torchvision's stem conv width for every ResNet.
_STEM_CHANNELS = 64

_TORCHVISION_RESNETS: dict[str, Callable[..., ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def _new_stem_conv(in_channels: int, small_input: bool) -> nn.Conv2d:
    # The ImageNet stem (7x7 stride 2, then a stride-2 max-pool) would shrink a 32x32 image to
    # 8x8 before the first residual block; the small-input stem (3x3 stride 1, no max-pool) keeps
    # the full resolution, as CIFAR ResNets do.
    if small_input:
        conv = nn.Conv2d(in_channels, _STEM_CHANNELS, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        conv = nn.Conv2d(in_channels, _STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
    # Same initialisation torchvision gives the convs it builds.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def build_resnet(name: str, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> ResNet:
    """torchvision's ``resnet18`` / ``resnet34`` / ``resnet50`` with random weights (nothing is
    downloaded), optionally with an adapted stem.

    With the default stem the state dict is exactly torchvision's. ``small_input`` replaces
    ``conv1`` by a 3x3 stride-1 conv and ``maxpool`` by an identity; ``in_channels != 3`` changes
    ``conv1``'s input channels. Either makes ``conv1.weight`` differ in shape from torchvision's,
    so an ImageNet checkpoint then loads only with that key left out.
    """
    if name not in _TORCHVISION_RESNETS:
        raise ValueError(f"unknown ResNet {name!r}; valid names: {', '.join(_TORCHVISION_RESNETS)}")
    model = _TORCHVISION_RESNETS[name](weights=None, num_classes=num_classes)
    if small_input or in_channels != 3:
        model.conv1 = _new_stem_conv(in_channels, small_input)
    if small_input:
        model.maxpool = nn.Identity()
    return model


RESNET_NAMES: tuple[str, ...] = tuple(_TORCHVISION_RESNETS)
