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


def same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF "same" padding computed from the input size, as timm's helpers do (asymmetric when the
    total is odd: the extra row / column goes last)."""
    height, width = x.shape[-2:]
    pad_h = max((-(-height // stride) - 1) * stride + kernel - height, 0)
    pad_w = max((-(-width // stride) - 1) * stride + kernel - width, 0)
    if pad_h or pad_w:
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return x


class SameConvBnAct(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.silu(self.bn(self.conv(same_padding(x, self.kernel, self.stride))))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))


class TimmStyleNet(nn.Module):
    """A timm-like CNN fx cannot trace: a shape assert, "same" padding computed from x.shape
    (asymmetric at stride 2, symmetric at stride 1), an odd-size pad branch, SE, SiLU, a nearest
    2x upsample and a reshape by x.size(0)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = SameConvBnAct(3, 32, 3, stride=2)
        self.dw = SameConvBnAct(32, 32, 3, stride=2, groups=32)
        self.se = SqueezeExcite(32)
        self.pw = SameConvBnAct(32, 64, 1)
        self.conv = SameConvBnAct(64, 64, 3)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = SameConvBnAct(64, 32, 3)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        assert x.dim() == 4 and x.shape[1] == 3, "expects NCHW RGB images"
        x = self.stem(x)
        if x.shape[-1] % 2:  # keep the map even before the stride-2 depthwise conv
            x = F.pad(x, [0, 1, 0, 1])
        x = self.pw(self.se(self.dw(x)))
        x = self.conv(x) + x
        x = self.fuse(self.up(x))
        return self.head(x.mean((2, 3)).reshape(x.size(0), -1))
