"""Lowering of ``nn.LayerNorm`` and ``F.layer_norm`` over the last axis to ``kernels.layer_norm``.

The kernel normalises the stored tensor's last axis. A tensor whose last torch axis is stored
last (ConvNeXt's permuted (B, H, W, C) map, or a 2-d (B, features) one) is read in place, seen
as (rows, C) by a free reshape; any other is transposed to such an order first. The result keeps
the input's storage order, so the permute back to (B, C, H, W) costs nothing either.

Weight and bias: the module's parameters, or for ``F.layer_norm`` constants of the graph
(``get_attr`` nodes: torchvision's LayerNorm2d passes its own parameters). Refused: a
normalised shape of more than the last axis, and weight / bias that are not graph constants.
"""

from __future__ import annotations

import math

import torch.fx as fx

from subp_fx.codegen.kernels.layer_norm import layer_norm_primfunc
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor, bind_arguments
from subp_fx.codegen.lowering.weights import float32_array

_PARAMETERS = ("input", "normalized_shape", "weight", "bias", "eps")
_DEFAULTS = {"weight": None, "bias": None, "eps": 1e-5}


def _arguments(view: GraphView, node: fx.Node) -> dict:
    """input, normalized_shape, eps, and weight / bias as tensors (None when absent)."""
    module = view.module(node)
    if module is not None:
        return {
            "input": node.args[0] if node.args else node.kwargs.get("input"),
            "normalized_shape": tuple(module.normalized_shape),
            "weight": module.weight,
            "bias": module.bias,
            "eps": module.eps,
        }
    arguments = bind_arguments(node, _PARAMETERS, _DEFAULTS)
    shape = arguments["normalized_shape"]
    arguments["normalized_shape"] = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    for name in ("weight", "bias"):
        given = arguments[name]
        arguments[name] = None if given is None else view.constant(given) if isinstance(given, fx.Node) else given
    return arguments


def layer_norm_problem(view: GraphView, node: fx.Node) -> str | None:
    arguments = _arguments(view, node)
    shape = view.shape(arguments["input"])
    normalized = arguments["normalized_shape"]
    if shape is None or len(normalized) != 1 or normalized[0] != shape[-1]:
        return (
            f"normalises {normalized} of an input of shape {shape}; layer norm over the last axis only "
            "(normalized_shape = (last dim,)) is supported"
        )
    if not view.module(node):
        bound = bind_arguments(node, _PARAMETERS, _DEFAULTS)
        for name in ("weight", "bias"):
            given = bound[name]
            if given is not None and (arguments[name] is None or tuple(arguments[name].shape) != normalized):
                return (
                    f"its {name} is not a constant of shape {normalized} (a get_attr of a parameter or buffer); "
                    "layer norm's weight and bias must be constants of the model"
                )
    return None


def lower_layer_norm(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    arguments = _arguments(ctx.view, node)
    source = arguments["input"]
    x = ctx.stored(source)
    last = len(x.shape) - 1
    if x.axis_order[-1] != last:
        x = ctx.tensor(source, tuple(axis for axis in x.axis_order if axis != last) + (last,))
    stored = x.stored_shape
    channels = stored[-1]
    rows = math.prod(stored[:-1])
    weight, bias, eps = arguments["weight"], arguments["bias"], float(arguments["eps"])
    constants = [ctx.program.constant(float32_array(t)) for t in (weight, bias) if t is not None]
    lanes = ctx.lanes
    output = ctx.program.call(
        ("layer_norm", rows, channels, eps, weight is not None, bias is not None),
        f"layer_norm_{rows}x{channels}",
        lambda: layer_norm_primfunc(rows, channels, eps, weight is not None, bias is not None, lanes),
        [ctx.program.reshape(x.expr, (rows, channels)), *constants],
        (rows, channels),
    )
    return LoweredTensor(ctx.program.reshape(output, stored), x.shape, x.order)
