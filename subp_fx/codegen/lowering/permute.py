"""Lowering of ``permute`` (``Tensor.permute`` and ``torch.permute``): a change of storage order, no copy.

A permute moves no data: its result is the input's Relax value with the permuted torch shape and
a new ``LoweredTensor.order``. ConvNeXt permutes each block's NHWC-stored (B, C, H, W) map to
(B, H, W, C) around its LayerNorm and Linear layers; with the order tracked, both read that
tensor as stored (channels contiguous) and the permute back is free too. A handler that needs
another order asks ``ctx.tensor(node, order)``, which transposes only then.

Refused: dims that are not a permutation of the input's axes.
"""

from __future__ import annotations

import torch.fx as fx

from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.passes.node_args import normalised_permutation, permute_dims


def permute_problem(view: GraphView, node: fx.Node) -> str | None:
    shape = view.shape(node.args[0]) if node.args else None
    dims = permute_dims(node)
    if shape is None or normalised_permutation(dims, len(shape)) is None:
        return f"permutes a tensor of shape {shape} by dims {dims!r}; the dims must be a permutation of its axes"
    return None


def lower_permute(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    x = ctx.stored(node.args[0])
    dims = normalised_permutation(permute_dims(node), len(x.shape))
    # Torch axis i of the result is axis dims[i] of the input; stored axis j holds input axis
    # x.axis_order[j], which is result axis dims.index(x.axis_order[j]).
    order = tuple(dims.index(axis) for axis in x.axis_order)
    return LoweredTensor(x.expr, tuple(x.shape[d] for d in dims), order)
