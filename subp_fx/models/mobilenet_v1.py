"""MobileNetV1 (Howard et al. 2017, width multiplier 1.0), the paper's fourth model.

torchvision has no MobileNetV1, so it lives here. Submodules carry readable names so that a layer
selection can address them: ``stem.conv``, ``features.<i>.depthwise``, ``features.<i>.pointwise``
(i = 0..12) and ``fc``. SUBP prunes the pointwise convs only; the default selection rule already
skips the depthwise convs (grouped) and the stem (3 input channels).
"""

from __future__ import annotations

import torch
import torch.nn as nn

# (output channels, stride) of the 13 depthwise-separable blocks; the stride sits on the
# depthwise conv, as in the original network.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32


class ConvBNReLU(nn.Sequential):
    """The stem: 3x3 conv, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False
        )
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.depthwise_relu = nn.ReLU(inplace=True)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        self.pointwise_relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise_relu(self.depthwise_bn(self.depthwise(x)))
        return self.pointwise_relu(self.pointwise_bn(self.pointwise(x)))


class MobileNetV1(nn.Module):
    """MobileNetV1 at width 1.0: 0.569 G multiply-accumulates and 4.23 M parameters at 224x224.

    ``small_input=True`` gives the stem conv stride 1 instead of 2, for 28x28 / 32x32 images: the
    network then downsamples 16x instead of 32x (a 32x32 image ends at 2x2 instead of 1x1, 28x28
    at 2x2 instead of 1x1), and every layer sees 4x the spatial positions, so the MACs per image
    are 4x those of the same input size with the standard stem. No parameter changes shape, so
    weights move freely between the two stems.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False):
        super().__init__()
        self.stem = ConvBNReLU(in_channels, STEM_CHANNELS, stride=1 if small_input else 2)
        blocks = []
        channels = STEM_CHANNELS
        for out_channels, stride in MOBILENET_V1_BLOCKS:
            blocks.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the SUBP authors initialise their MobileNetV1: convs He-normal over fan_out
        # (std sqrt(2 / (k * k * C_out)), the depthwise convs included), batch norms as identity,
        # and the classifier left at PyTorch's default nn.Linear init (uniform in +-1/sqrt(C_in)).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, in_channels=in_channels, small_input=small_input)
