"""Lowering of depthwise convs (``nn.Conv2d`` with groups == C_in == C_out) to ``kernels.depthwise``,
or in an int8 build, for the depthwise convs the plan puts in int8, to ``kernels.depthwise_int8``.

The (C, 1, kh, kw) weight becomes (kh, kw, C) so a vector of channels is one load; bias and a
fused activation (``fusion``; e.g. MobileNetV3's hardswish, EfficientNet's SiLU) run in the kernel's
write-back. The int8 kernel reads its input's uint8 form (``lowering.int8``) and stores uint8 when
the int8 lowering says every reader of its result reads uint8 (``Int8Lowering.stored_uint8``).
One ``KernelEntry`` per layer.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.conv_geometry import explicit_padding
from subp_fx.codegen.kernels.bf16_spec import BF16
from subp_fx.codegen.kernels.depthwise import DepthwiseConvSpec, depthwise_conv2d_primfunc, depthwise_tile_cols
from subp_fx.codegen.kernels.depthwise_int8 import DepthwiseInt8Spec, depthwise_int8_primfunc, depthwise_int8_tile_cols
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import LoweredTensor
from subp_fx.codegen.lowering.int8 import UINT8, quant_params
from subp_fx.codegen.lowering.weights import float32_array
from subp_fx.codegen.runtime.kernel_table import DEPTHWISE, INT8_DEPTHWISE_PRECISION
from subp_fx.quantize import quantize_depthwise_weights
from subp_fx.quantize.plan import conv_input


def _geometry(conv: nn.Conv2d, stored_shape: tuple[int, ...], activation: str) -> dict:
    """The ``DepthwiseConvSpec`` fields of ``conv`` on an NHWC input of ``stored_shape``."""
    batch, height, width, channels = stored_shape
    return dict(
        batch=batch,
        height=height,
        width=width,
        channels=channels,
        kernel_size=tuple(conv.kernel_size),
        stride=tuple(conv.stride),
        padding=explicit_padding(conv.padding, conv.kernel_size, conv.dilation),
        dilation=tuple(conv.dilation),
        activation=activation,
    )


def _kernel_name(spec: DepthwiseConvSpec, prefix: str = "depthwise") -> str:
    kh, kw = spec.kernel_size
    name = f"{prefix}_conv{kh}x{kw}s{spec.stride[0]}_b{spec.batch}_{spec.height}x{spec.width}_{spec.channels}"
    return name + (f"_{spec.activation}" if spec.activation != "none" else "")


def _record(ctx: LoweringContext, node: fx.Node, key, spec: DepthwiseConvSpec, conv: nn.Conv2d, tile: str, **fields):
    ctx.record_kernel(
        node,
        key,
        bias=spec.bias,
        residual=False,
        activation=spec.activation,
        kind=DEPTHWISE,
        op="conv2d",
        in_channels=spec.channels,
        kept_per_row=1,
        out_channels=spec.channels,
        kernel_size=spec.kernel_size,
        stride=spec.stride,
        out_hw=(spec.out_height, spec.out_width),
        block_size=None,
        macs=spec.macs,
        tile=tile,
        dense_reason=f"depthwise conv (groups={conv.groups}): 1xN blocks need groups=1",
        **fields,
    )


def lower_int8_depthwise_conv(ctx: LoweringContext, node: fx.Node, conv: nn.Conv2d) -> LoweredTensor:
    """``node`` (a depthwise conv of the int8 plan) on the int8 depthwise kernel: reads the uint8
    form of its input, weights quantised per channel with the zero point folded into the bias
    (``quantize.quantize_depthwise_weights``)."""
    int8 = ctx.int8
    data = int8.depthwise_input(conv_input(node).name)
    epilogue = ctx.epilogue(node)
    result = epilogue.result_node
    out_dtype = UINT8 if result.name in int8.stored_uint8 else "float32"
    batch, height, width, channels = data.stored_shape
    spec = DepthwiseInt8Spec(
        **_geometry(conv, data.stored_shape, epilogue.activation),
        input_zero_point=int(data.quant.zero_point),
        out_dtype=out_dtype,
    )
    packed = quantize_depthwise_weights(conv.weight, conv.bias, data.quant)
    arguments = [data.expr] + [ctx.program.constant(array) for array in (packed.codes, packed.scale, packed.bias)]
    out_quant = int8.plan.activations[result.name] if out_dtype == UINT8 else None
    arguments += [ctx.program.constant(quant_params(out_quant))] if out_quant is not None else []
    cols = depthwise_int8_tile_cols(spec, int8.path)
    key = ("depthwise_conv2d_int8", spec, cols, int8.path.name)
    name = _kernel_name(spec, "depthwise_int8") + ("_u8out" if out_dtype == UINT8 else "")
    output = ctx.program.call(
        key, name, lambda: depthwise_int8_primfunc(spec, int8.path, cols), arguments, spec.out_shape, out_dtype
    )
    lanes = min(int8.path.lanes, channels)
    precision = INT8_DEPTHWISE_PRECISION + ("->u8" if out_dtype == UINT8 else "")
    _record(ctx, node, key, spec, conv, f"1x{cols}px x {lanes} channels", precision=precision)
    shape = (batch, channels, spec.out_height, spec.out_width)
    return LoweredTensor(output, shape, dtype=out_dtype, quant=out_quant)


def lower_depthwise_conv(ctx: LoweringContext, node: fx.Node, conv: nn.Conv2d) -> LoweredTensor:
    if ctx.int8 is not None and ctx.int8.is_int8_conv(node):
        return lower_int8_depthwise_conv(ctx, node, conv)
    data = ctx.tensor(node.args[0])
    epilogue = ctx.epilogue(node)
    batch, height, width, channels = data.stored_shape
    # bf16 build: a bf16-stored input is widened in the kernel, and the result stored as bf16
    # where every reader reads bf16 (lowering.bf16.Bf16Plan)
    stored = ctx.bf16 is not None and epilogue.result_node.name in ctx.bf16.plan.stored
    spec = DepthwiseConvSpec(
        **_geometry(conv, data.stored_shape, epilogue.activation),
        bias=conv.bias is not None,
        in_dtype="bfloat16" if data.dtype == BF16 else "float32",
        out_dtype="bfloat16" if stored else "float32",
    )
    weight = float32_array(conv.weight)[:, 0].transpose(1, 2, 0)  # (C, 1, kh, kw) -> (kh, kw, C)
    arguments = [data.expr, ctx.program.constant(weight)]
    arguments += [ctx.program.constant(float32_array(conv.bias))] if conv.bias is not None else []
    key = ("depthwise_conv2d", spec)
    name = _kernel_name(spec) + ("_bf16in" if spec.in_dtype == "bfloat16" else "") + ("_bf16out" if stored else "")
    build = lambda: depthwise_conv2d_primfunc(spec, ctx.lanes)  # noqa: E731
    output = ctx.program.call(key, name, build, arguments, spec.out_shape, BF16 if stored else "float32")
    tile = f"1x{depthwise_tile_cols(spec.out_width)}px x {min(ctx.lanes, channels)} channels"
    storage = [f"bf16 {side}" for side, dtype in (("in", spec.in_dtype), ("out", spec.out_dtype)) if dtype != "float32"]
    _record(ctx, node, key, spec, conv, tile, precision="fp32" + (f" ({', '.join(storage)})" if storage else ""))
    shape = (batch, channels, spec.out_height, spec.out_width)
    return LoweredTensor(output, shape, dtype=BF16 if stored else "float32")
