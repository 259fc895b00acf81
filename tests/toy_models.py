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


# Layers in timm's style: subclasses of torch.nn layers with a forward of their own, which
# torch.fx traces into (functional calls on get_attr weights), and a net built from them.


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's norm + act layer: a shape assert, F.batch_norm on its own buffers, then the act."""

    def __init__(self, channels: int, act: type[nn.Module] = nn.SiLU, eps: float = 1e-3, affine: bool = True):
        super().__init__(channels, eps=eps, affine=affine)
        self.act = act()

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected a 4-d input")
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
        return self.act(x)


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame: TF "same" padding computed from the input size, then F.conv2d."""

    def forward(self, x):
        x = same_padding(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class ConvTorchSame(nn.Conv2d):
    """F.conv2d with torch's own padding='same' (stride 1; an even kernel pads one side more)."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, 1, "same", self.dilation, self.groups)


class Linear(nn.Linear):
    """timm's Linear: F.linear on its own weights."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class TimmNormActNet(nn.Module):
    """A MobileNetV3 / EfficientNet-like net of timm-style layers: stride-2 "same" convs (asymmetric
    pads), a stride-1 one (symmetric pad), a depthwise conv, an even-kernel conv with torch's
    padding='same', batch norm + act layers, squeeze-excite on x.mean((2, 3), keepdim=True), a
    residual, a mean pool and a functional Linear head. fx cannot trace it symbolically (the
    "same" padding does Python arithmetic on x.shape)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = Conv2dSame(3, 16, 3, stride=2, bias=False)
        self.bn1 = BatchNormAct2d(16)
        self.dw = Conv2dSame(16, 16, 3, groups=16, bias=False)
        self.bn2 = BatchNormAct2d(16, act=nn.Hardswish)
        self.se = SqueezeExcite(16)
        self.pw = nn.Conv2d(16, 32, 1, bias=False)
        self.bn3 = BatchNormAct2d(32, act=nn.Identity)
        self.down = Conv2dSame(32, 32, 3, stride=2, bias=False)
        self.bn4 = BatchNormAct2d(32, act=nn.ReLU)
        self.even = ConvTorchSame(32, 32, 2)
        self.head = Linear(32, num_classes)

    def forward(self, x):
        x = self.bn1(self.stem(x))
        x = self.pw(self.se(self.bn2(self.dw(x))))
        x = self.bn3(x)
        x = self.bn4(self.down(x))
        x = torch.relu(self.even(x)) + x
        return self.head(torch.flatten(x.mean((2, 3), keepdim=True), 1))


# Blocks in the style of timm's ConvNeXt (layer scale as ``gamma.reshape(1, -1, 1, 1)`` after a
# 1x1-conv MLP ending in a dropout), MixNet (one batch norm after a concat of convs of several
# kernel sizes) and GhostNet (a concat of a conv and its cheap depthwise copy, sliced to
# ``out_chs``), and a net of them.


class TimmConvNeXtBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.fc1 = nn.Conv2d(channels, 4 * channels, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(4 * channels, channels, 1)
        self.drop = nn.Dropout(0.1)
        self.gamma = nn.Parameter(torch.rand(channels) + 0.5)
        self.shortcut = nn.Identity()

    def forward(self, x):
        y = self.norm(self.conv_dw(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.drop(self.fc2(self.act(self.fc1(y))))
        return y.mul(self.gamma.reshape(1, -1, 1, 1)) + self.shortcut(x)


class MixedConvBn(nn.Module):
    def __init__(self, in_channels: int, out_splits: tuple[int, ...]):
        super().__init__()
        self.in_split = in_channels // len(out_splits)
        self.convs = nn.ModuleList(
            [nn.Conv2d(self.in_split, out, 2 * i + 3, padding=i + 1, bias=False) for i, out in enumerate(out_splits)]
        )
        self.bn = nn.BatchNorm2d(sum(out_splits))

    def forward(self, x):
        parts = torch.split(x, self.in_split, dim=1)
        return F.silu(self.bn(torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], dim=1)))


class GhostConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        half = -(-out_channels // 2)
        self.primary = nn.Conv2d(in_channels, half, 1, bias=False)
        self.primary_bn = nn.BatchNorm2d(half)
        self.cheap = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.cheap_bn = nn.BatchNorm2d(half)

    def forward(self, x):
        x1 = F.relu(self.primary_bn(self.primary(x)))
        x2 = F.relu(self.cheap_bn(self.cheap(x1)))
        return torch.cat([x1, x2], dim=1)[:, : self.out_channels, :, :]


class OtherLibrariesNet(nn.Module):
    """Stem, a MixNet block (16 -> 16 + 16 over 3x3 and 5x5), a GhostNet conv to an odd 33 channels
    (padded back to 48 by a 1x1 conv), a ConvNeXt block, mean pool, a head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.mixed = MixedConvBn(32, (16, 16))
        self.ghost = GhostConv(32, 33)
        self.widen = nn.Conv2d(33, 48, 1)
        self.block = TimmConvNeXtBlock(48)
        self.head = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.widen(self.ghost(self.mixed(self.stem(x))))
        return self.head(self.block(x).mean((2, 3)))
