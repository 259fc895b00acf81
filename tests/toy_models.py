"""Small CNNs shared by the pass tests (tests/passes/).

``ToyNet`` convs (input 1x3x16x16, N=16), in execution order:

    name              weight (Co, Ci/g, k, k)  groups  stride  out HxW   default rule (N=16)
    stem              (16, 3, 3, 3)            1       1       16x16     dense: C_in=3 < min_in_channels=4
    dw                (16, 1, 3, 3)            16      1       16x16     dense: depthwise
    pw                (32, 16, 1, 1)           1       1       16x16     sparse
    grouped           (32, 8, 3, 3)            4       1       16x16     dense: grouped
    block.conv1       (64, 32, 3, 3)           1       2       8x8       sparse
    block.conv2       (64, 64, 3, 3)           1       1       8x8       sparse
    block.downsample  (64, 32, 1, 1)           1       2       8x8       sparse
    odd               (24, 64, 3, 3)           1       1       8x8       dense: 16 does not divide 24
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

TOY_INPUT_SHAPE = (1, 3, 16, 16)

TOY_CONV_NAMES = ["stem", "dw", "pw", "grouped", "block.conv1", "block.conv2", "block.downsample", "odd"]
# What the default selection rule makes sparse with N=16 (see the table above).
TOY_DEFAULT_SPARSE = {"pw", "block.conv1", "block.conv2", "block.downsample"}


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ToyNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.block = ResidualBlock(32, 64, stride=2)
        self.odd = nn.Conv2d(64, 24, 3, padding=1)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(self.dw(x))
        x = F.relu(self.pw(x))
        x = F.relu(self.grouped(x))
        x = self.block(x)
        x = F.relu(self.odd(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


class UntraceableNet(nn.Module):
    """Data-dependent control flow in the top-level forward: fx cannot trace it at all."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x)
        if x.sum() > 0:
            x = x * 2
        return self.conv2(x)


class Gate(nn.Module):
    """Data-dependent control flow inside a submodule: traceable once ``Gate`` is a leaf."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return x


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = Gate(16)
        self.conv_out = nn.Conv2d(16, 32, 3, padding=1)

    def forward(self, x):
        return self.conv_out(torch.relu(self.gate(torch.relu(self.stem(x)))))


def toy_input(seed: int = 0, shape: tuple[int, ...] = TOY_INPUT_SHAPE) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def seeded(model_cls, seed: int = 0, **kwargs) -> nn.Module:
    """A model whose parameters and BN statistics are reproducible from ``seed`` (and not all
    trivial: BN running stats are randomised so eval mode exercises them)."""
    torch.manual_seed(seed)
    model = model_cls(**kwargs)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model


def randomise_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters (so folding is really exercised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(channels, generator=generator) - 0.5)
    return model.eval()
