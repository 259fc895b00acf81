"""Lowering of ``nn.Linear``: on a (B, features) input to the prepacked kernel of
``kernels.linear``; on a 4-d input (ConvNeXt's (B, H, W, C) after a permute) to a dense 1x1 conv.

2-d: the (O, I) weight is packed into (O_pad / V, I, V) blocks; O is padded to a multiple of V
and the padded features are sliced off after the call.

4-d: a Linear over the last axis is a 1x1 conv over the other three, so it runs on the conv
kernel (``conv.emit_pointwise_dense``: tiles, tile timing) reading the tensor as stored when its
last axis is stored last (a permuted NHWC map is), else after one transpose. It stays dense:
SUBP's layer selection (``passes.select``) and its modules prune ``nn.Conv2d`` only, so a Linear
never arrives block-sparse.

int8 (a linear of ``quantize.plan_int8``'s plan, 2-d input only): a (B, I) Linear is a 1x1 conv,
so it runs on the int8 conv kernel (``int8.emit_int8_conv``) reading the uint8 input (quantised
per tensor by ``int8.after_lowered``) as a 1 x B image of I channels, with the weight int8 per
output feature, O padded to a multiple of N (``int8.linear_int8_block_size``) and sliced after
the call, and an fp32 output. Each of the R = O_pad / N block-rows is one parallel task, so the
threads split the weight stream (the kernel table's ``out`` shows the 1 x B image). Timed alone at
batch 1 (Ice Lake, 2 threads, min of 40, three rounds under load): 2048->1000 fp32 kernel
510-1160 us, int8 quantise + kernel 77-133 us; 512->1000 fp32 56-124 us, int8 18-33 us. At
2048->1000 both stream their weights at about 16 GB/s (8 MB in 510 us, 2 MB in 130 us): the
gain is int8's quarter of the bytes, so a dedicated GEMV kernel was not written.

A fusable activation after the layer (``activations``) is applied in the kernel's write-back
(``fusion``). Refused: inputs of rank other than 2 and 4. One ``KernelEntry`` per layer.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from subp_fx.codegen.kernels.layout import slice_channels_primfunc
from subp_fx.codegen.kernels.linear import LinearSpec, linear_block, linear_primfunc, pack_linear_weight, pad_bias
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.conv import emit_pointwise_dense, pack_dense, pointwise_layer
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.codegen.lowering.int8 import UINT8, emit_int8_conv, linear_int8_block_size
from subp_fx.codegen.lowering.weights import float32_array
from subp_fx.codegen.runtime.kernel_table import DENSE


def linear_problem(view: GraphView, node: fx.Node) -> str | None:
    shape = view.shape(node.args[0]) if node.args else None
    if shape is None or len(shape) not in (2, 4):
        return (
            f"its input has shape {shape}; linear layers are lowered for 2-d (B, features) inputs and 4-d inputs "
            "(over the last axis, e.g. (B, H, W, C) after a permute)"
        )
    return None


POINTWISE_REASON = "Linear over a map's last axis, run as a dense 1x1 conv: SUBP prunes nn.Conv2d layers only"
FULLY_CONNECTED_REASON = "fully connected layer: SUBP prunes convs only"


def _lower_pointwise_linear(ctx: LoweringContext, node: fx.Node, linear: nn.Linear) -> LoweredTensor:
    x = ctx.stored(node.args[0])
    last = len(x.shape) - 1
    if x.axis_order[-1] != last:
        x = ctx.tensor(node.args[0], tuple(axis for axis in x.axis_order if axis != last) + (last,))
    # The stored (S0, S1, S2, I) tensor read as an NHWC map, i.e. a canonical (S0, I, S1, S2) one.
    stored = x.stored_shape
    as_map = LoweredTensor(x.expr, (stored[0], stored[3], stored[1], stored[2]))
    bias = float32_array(linear.bias) if linear.bias is not None else None
    output = emit_pointwise_dense(ctx, node, as_map, float32_array(linear.weight), bias, POINTWISE_REASON)
    # Stored (S0, S1, S2, O): the input's storage order, with O in place of I.
    return LoweredTensor(output.expr, (*x.shape[:-1], linear.out_features), x.axis_order)


def _lower_int8_linear(ctx: LoweringContext, node: fx.Node, linear: nn.Linear) -> LoweredTensor:
    """An int8 linear of the plan on the int8 conv kernel (the module docstring)."""
    codes = ctx.int8.quantized[node.args[0].name]
    batch, in_features = codes.shape
    # (B, I) read as a (1, 1, B, I) NHWC map, the batch along its width (the same bytes): the
    # kernel's register tile then spans several images per weight load; at batch 1 it is one pixel.
    # 2048->1024 at batch 8, kernel alone (Ice Lake, 2 threads, under load): 134-262 us as a 1x8
    # image against 827-1359 us as 8 1x1 images (each re-streaming the weights).
    as_map = LoweredTensor(
        ctx.program.reshape(codes.expr, (1, 1, batch, in_features)),
        (1, in_features, 1, batch),
        dtype=UINT8,
        quant=codes.quant,
    )
    bias = float32_array(linear.bias) if linear.bias is not None else None
    weight = float32_array(linear.weight)[:, :, None, None]
    weights = pack_dense(weight, bias, linear_int8_block_size(linear.out_features))
    layer = pointwise_layer(FULLY_CONNECTED_REASON)
    output = emit_int8_conv(ctx, node, weights, layer, data=as_map, op="linear")
    return LoweredTensor(ctx.program.reshape(output.expr, (batch, linear.out_features)), (batch, linear.out_features))


def lower_linear(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    linear: nn.Linear = ctx.view.module(node)
    if len(ctx.stored(node.args[0]).shape) == 4:
        return _lower_pointwise_linear(ctx, node, linear)
    if ctx.int8 is not None and ctx.int8.is_int8_linear(node):
        return _lower_int8_linear(ctx, node, linear)
    features = ctx.tensor(node.args[0])
    batch, in_features = features.shape
    out_features = linear.out_features
    spec = LinearSpec(
        batch=batch,
        in_features=in_features,
        out_features=out_features,
        block=linear_block(out_features, ctx.lanes),
        bias=linear.bias is not None,
        activation=ctx.epilogue(node).activation,
    )
    arguments = [features.expr, ctx.program.constant(pack_linear_weight(float32_array(linear.weight), spec.block))]
    arguments += [ctx.program.constant(pad_bias(float32_array(linear.bias), spec))] if linear.bias is not None else []
    key = ("linear", spec)
    name = f"dense_linear_b{batch}_{in_features}to{out_features}" + (
        f"_{spec.activation}" if spec.activation != "none" else ""
    )
    output = ctx.program.call(key, name, lambda: linear_primfunc(spec, ctx.lanes), arguments, spec.out_shape)
    if spec.padded_out_features != out_features:
        # (B, O_pad) is a (B, 1, 1, O_pad) map: slice the padded features off with the channel slice.
        as_map = (batch, 1, 1, spec.padded_out_features)
        output = ctx.program.call(
            ("slice_channels", as_map, out_features),
            f"slice_features_{spec.padded_out_features}to{out_features}",
            lambda: slice_channels_primfunc(as_map, out_features, ctx.lanes),
            [ctx.program.reshape(output, as_map)],
            (batch, 1, 1, out_features),
        )
        output = ctx.program.reshape(output, (batch, out_features))
    ctx.record_kernel(
        node,
        key,
        bias=spec.bias,
        residual=False,
        activation=spec.activation,
        kind=DENSE,
        op="linear",
        in_channels=in_features,
        kept_per_row=in_features,
        out_channels=out_features,
        kernel_size=(1, 1),
        stride=(1, 1),
        out_hw=(1, 1),
        block_size=spec.block,
        macs=batch * in_features * out_features,
        tile=f"{spec.batch_tile} rows x {spec.block} features",
        dense_reason=FULLY_CONNECTED_REASON,
    )
    return LoweredTensor(output, (batch, out_features))
