"""Lowering of ``nn.Linear`` on a (B, features) input to the prepacked kernel of ``kernels.linear``.

The (O, I) weight is packed into (O_pad / V, I, V) blocks; O is padded to a multiple of V and
the padded features are sliced off after the call. A relu / relu6 after the layer is fused
(``fusion``). Refused: inputs that are not 2-d. One ``KernelEntry`` per layer.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from subp_fx.codegen.kernels.layout import slice_channels_primfunc
from subp_fx.codegen.kernels.linear import LinearSpec, linear_block, linear_primfunc, pack_linear_weight, pad_bias
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.codegen.lowering.weights import float32_array
from subp_fx.codegen.runtime.kernel_table import DENSE


def linear_problem(view: GraphView, node: fx.Node) -> str | None:
    shape = view.shape(node.args[0]) if node.args else None
    if shape is None or len(shape) != 2:
        return f"its input has shape {shape}; linear layers are lowered for 2-d (B, features) inputs only"
    return None


def lower_linear(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    linear: nn.Linear = ctx.view.module(node)
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
        dense_reason="fully connected layer: SUBP prunes convs only",
    )
    return LoweredTensor(output, (batch, out_features))
