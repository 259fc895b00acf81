"""A small VGG-style CNN for 28x28 / 32x32 images: the demo's and the tests' model.

Sized so that SUBP on Fashion-MNIST trains in minutes on two CPU cores, while still having
the structure SUBP cares about: a dense stem (C_in = image channels), then 3x3 convs whose
output channels are multiples of 32, so both N = 16 and N = 32 blocks fit every layer.
"""

from __future__ import annotations

import torch.nn as nn


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """stem 3x3 -> (64, /2) -> 64 -> (128, /2) -> 128 -> global average pool -> fc."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, 1)
        self.features = nn.Sequential(
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 2 * width, 1),
            _conv_bn_relu(2 * width, 4 * width, 2),
            _conv_bn_relu(4 * width, 4 * width, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


def small_cnn(num_classes: int = 10, in_channels: int = 1, small_input: bool = True) -> SmallCNN:
    """Registry entry; ``small_input`` is accepted for a uniform signature (this model is
    always built for small images)."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)
