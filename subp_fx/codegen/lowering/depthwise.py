"""Lowering of depthwise convs (``nn.Conv2d`` with groups == C_in == C_out) to ``kernels.depthwise``.

The (C, 1, kh, kw) weight becomes (kh, kw, C) so a vector of channels is one load; bias and a
fused activation (``fusion``; e.g. MobileNetV3's hardswish, EfficientNet's SiLU) run in the kernel's
write-back. One ``KernelEntry`` per layer.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.conv_geometry import explicit_padding
from subp_fx.codegen.kernels.depthwise import DepthwiseConvSpec, depthwise_conv2d_primfunc, depthwise_tile_cols
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import LoweredTensor
from subp_fx.codegen.lowering.weights import float32_array
from subp_fx.codegen.runtime.kernel_table import DEPTHWISE


def lower_depthwise_conv(ctx: LoweringContext, node: fx.Node, conv: nn.Conv2d) -> LoweredTensor:
    data = ctx.tensor(node.args[0])
    epilogue = ctx.epilogue(node)
    batch, height, width, channels = data.stored_shape
    spec = DepthwiseConvSpec(
        batch=batch,
        height=height,
        width=width,
        channels=channels,
        kernel_size=tuple(conv.kernel_size),
        stride=tuple(conv.stride),
        padding=explicit_padding(conv.padding, conv.kernel_size, conv.dilation),
        dilation=tuple(conv.dilation),
        bias=conv.bias is not None,
        activation=epilogue.activation,
    )
    weight = float32_array(conv.weight)[:, 0].transpose(1, 2, 0)  # (C, 1, kh, kw) -> (kh, kw, C)
    arguments = [data.expr, ctx.program.constant(weight)]
    arguments += [ctx.program.constant(float32_array(conv.bias))] if conv.bias is not None else []
    kh, kw = spec.kernel_size
    name = f"depthwise_conv{kh}x{kw}s{spec.stride[0]}_b{batch}_{height}x{width}_{channels}" + (
        f"_{spec.activation}" if spec.activation != "none" else ""
    )
    key = ("depthwise_conv2d", spec)
    output = ctx.program.call(key, name, lambda: depthwise_conv2d_primfunc(spec, ctx.lanes), arguments, spec.out_shape)
    ctx.record_kernel(
        node,
        key,
        bias=spec.bias,
        residual=False,
        activation=spec.activation,
        kind=DEPTHWISE,
        op="conv2d",
        in_channels=channels,
        kept_per_row=1,
        out_channels=channels,
        kernel_size=spec.kernel_size,
        stride=spec.stride,
        out_hw=(spec.out_height, spec.out_width),
        block_size=None,
        macs=spec.macs,
        tile=f"1x{depthwise_tile_cols(spec.out_width)}px x {min(ctx.lanes, channels)} channels",
        dense_reason=f"depthwise conv (groups={conv.groups}): 1xN blocks need groups=1",
    )
    return LoweredTensor(output, (batch, channels, spec.out_height, spec.out_width))
