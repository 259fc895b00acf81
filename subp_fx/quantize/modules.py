"""The eager modules of the int8 reference graph: quantise, dequantise, the int8 conv and linear.

They compute the int8 arithmetic exactly (integer accumulation in float64, which is exact for
any realistic conv: |sum| < 2**53), as the specification the compiled kernels are tested against,
not fast.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.quantize.params import ActivationQuant, output_scales, quantize_weight


class _ActivationStep(nn.Module):
    """A module applying one tensor's ``ActivationQuant`` (shown in the graph's printout)."""

    def __init__(self, quant: ActivationQuant):
        super().__init__()
        self.quant = quant

    def extra_repr(self) -> str:
        return f"scale={self.quant.scale:.6g}, zero_point={self.quant.zero_point}"


class Quantize(_ActivationStep):
    """float -> uint8 codes of one tensor (``ActivationQuant.quantize``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant.quantize(x)


class Dequantize(_ActivationStep):
    """uint8 codes -> float32 ``(q - zero_point) * scale`` (``ActivationQuant.dequantize``)."""

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.quant.dequantize(q)


class Int8Conv2dReference(nn.Module):
    """An int8 conv on uint8 input codes: ``acc = conv(q_x - zp, q_w)`` (exact integers, float64),
    ``y = float32(acc * scale + b)`` with ``scale = s_x * s_w`` (float32) and ``b`` the fp32 bias,
    in float64. Zero padding of ``q_x - zp`` is padding ``q_x`` with the zero point, as the kernel
    does. Build with :meth:`from_conv` from an ``nn.Conv2d`` (any ``groups``: a depthwise conv as the
    int8 depthwise kernel computes it, a grouped one as the int8 conv kernel does, block-diagonally)
    or a ``BlockSparseConv2d``.
    """

    def __init__(
        self, codes: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, input_quant, geometry, groups: int = 1
    ):
        super().__init__()
        self.input_quant = input_quant
        self.stride, self.padding, self.dilation = geometry
        self.groups = groups
        self.register_buffer("weight_codes", torch.from_numpy(codes.astype(np.int8)))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))
        zeros = np.zeros(codes.shape[0], dtype=np.float32)
        self.register_buffer("bias", torch.from_numpy((zeros if bias is None else bias).astype(np.float32)))

    @classmethod
    def from_conv(cls, conv: nn.Module, input_quant: ActivationQuant) -> Int8Conv2dReference:
        """The int8 form of ``conv`` reading uint8 input quantised with ``input_quant``; weights
        quantised per output channel (``quantize_weight``) from the dense weight, which equals
        quantising a block-sparse conv's kept values."""
        if isinstance(conv, BlockSparseConv2d):
            weight = conv.to_dense_weight()
        elif type(conv) is nn.Conv2d:
            weight = conv.weight
        else:
            raise ValueError(f"an int8 reference conv is made from an nn.Conv2d or a BlockSparseConv2d, got {conv}")
        codes, scales = quantize_weight(weight)
        bias = None if conv.bias is None else conv.bias.detach().cpu().numpy()
        geometry = (tuple(conv.stride), conv.padding, tuple(conv.dilation))
        groups = conv.groups if isinstance(conv, nn.Conv2d) else 1
        return cls(codes, output_scales(input_quant, scales), bias, input_quant, geometry, groups)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dtype != torch.uint8:
            raise TypeError(f"Int8Conv2dReference reads uint8 input codes, got {codes.dtype}")
        centred = codes.to(torch.float64) - self.input_quant.zero_point
        weight = self.weight_codes.to(torch.float64)
        acc = F.conv2d(centred, weight, None, self.stride, self.padding, self.dilation, self.groups)
        scale = self.scale.to(torch.float64).view(1, -1, 1, 1)
        bias = self.bias.to(torch.float64).view(1, -1, 1, 1)
        return (acc * scale + bias).to(torch.float32)

    def extra_repr(self) -> str:
        out_channels, in_channels, kh, kw = self.weight_codes.shape
        return (
            f"{in_channels * self.groups}, {out_channels}, kernel_size=({kh}, {kw}), stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, input zero_point={self.input_quant.zero_point}"
        )


class Int8LinearReference(Int8Conv2dReference):
    """An int8 linear layer on uint8 input codes (B, in_features): the int8 conv's arithmetic on
    a 1x1 image (``acc = (q_x - zp) @ q_w.T`` exact, ``y = float32(acc * scale + b)``), as the
    compiled model runs it on the int8 conv kernel. Build with :meth:`from_linear`."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, input_quant: ActivationQuant) -> Int8LinearReference:
        """The int8 form of ``linear`` (an ``nn.Linear``) reading uint8 input quantised with
        ``input_quant``; weights quantised per output feature (``quantize_weight``)."""
        if type(linear) is not nn.Linear:
            raise ValueError(f"an int8 reference linear is made from an nn.Linear, got {linear}")
        codes, scales = quantize_weight(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().cpu().numpy()
        geometry = ((1, 1), 0, (1, 1))
        return cls(codes[:, :, None, None], output_scales(input_quant, scales), bias, input_quant, geometry)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 2:
            raise ValueError(f"Int8LinearReference reads (B, in_features) codes, got shape {tuple(codes.shape)}")
        return super().forward(codes[:, :, None, None]).flatten(1)

    def extra_repr(self) -> str:
        out_features, in_features = self.weight_codes.shape[:2]
        return f"in_features={in_features}, out_features={out_features}, input zero_point={self.input_quant.zero_point}"
