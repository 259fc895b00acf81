"""Lowering of the weightless ops: activations, add, multiply, pooling, mean, flatten, concat, batch
norm (channel shuffle and splits: ``channels``).

Each op has a ``*_problem(view, node) -> str | None`` (why it cannot be lowered, checked for the
whole graph before anything is built) and a ``lower_*(ctx, node)`` that emits the op's scheduled
kernel (``codegen.kernels``) on NHWC data. Shape arithmetic comes from torch (``GraphView.shape``), so
ceil_mode, 'same' padding and the like need no re-derivation here. Python values computed from
shapes (``x.size(0)``) are constants by then (``passes.fold_static_shapes``).

Refused: max pool with ``return_indices``; average pool whose ``ceil_mode`` changes the output
size; flatten / view / reshape other than to (B, features); concat on a non-channel axis; adds of
different shapes (broadcasting) or with ``alpha``; multiplies other than same-shape maps, a map
by a per-channel gate, or a tensor by a per-axis constant of the model (a layer scale that
``passes.fold_layer_scale`` could not fold); means other than over the spatial axes; dropout,
batch norm and stochastic depth in training mode.

Activations, adds, per-axis multiplies and identities keep their input's storage order (see
``graph_view.LoweredTensor``), so a permuted tensor flows through them without a transpose.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.conv_geometry import int_pair
from subp_fx.codegen import activations
from subp_fx.codegen.kernels.elementwise import (
    activation_primfunc,
    add_primfunc,
    broadcast_binary_primfunc,
    channel_affine_primfunc,
)
from subp_fx.codegen.kernels.layout import concat_channels_primfunc, nhwc_to_nchw_primfunc
from subp_fx.codegen.kernels.pooling import (
    PoolWindow,
    adaptive_avg_pool2d_primfunc,
    avg_pool2d_primfunc,
    global_avg_pool_primfunc,
    max_pool2d_primfunc,
)
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.fusion import add_operands, applied_activation, same_shape_operands
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor, bind_arguments


def _input(node: fx.Node) -> fx.Node:
    return node.args[0] if node.args else next(iter(node.kwargs.values()))


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


def _feature_map_problem(view: GraphView, node: fx.Node, what: str) -> str | None:
    shape = view.shape(_input(node))
    if shape is None or len(shape) != 4:
        return f"its input has shape {shape}; {what} is lowered for 4-d (B, C, H, W) inputs only"
    return None


# --- activations --------------------------------------------------------------------------------


def activation_problem(view: GraphView, node: fx.Node) -> str | None:
    if applied_activation(view, node) is None:
        return (
            "its arguments match none of the activations spelled this way "
            f"({', '.join(sorted(activations.ACTIVATIONS))}; e.g. GELU's approximate must be 'none' or 'tanh')"
        )
    return None


def lower_activation(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    """The node's activation (``activations.ACTIVATIONS``) elementwise, in the input's storage order."""
    activation = applied_activation(ctx.view, node).name
    x = ctx.stored(_input(node))
    shape = x.stored_shape
    output = ctx.program.call(
        ("activation", activation, shape),
        f"{activation}_{_shape_text(shape)}",
        lambda: activation_primfunc(shape, activation, ctx.lanes),
        [x.expr],
        shape,
    )
    return LoweredTensor(output, x.shape, x.order)


# --- add ----------------------------------------------------------------------------------------


def _operand_descriptions(view: GraphView, node: fx.Node) -> list:
    """A binary op's two operands for an error message: a tensor's shape, anything else's repr."""
    arguments = bind_arguments(node, ("input", "other"))
    return [view.shape(arguments.get(name)) or repr(arguments.get(name)) for name in ("input", "other")]


def add_problem(view: GraphView, node: fx.Node) -> str | None:
    if add_operands(view, node) is None:
        shapes = _operand_descriptions(view, node)
        return (
            f"adds {shapes[0]} and {shapes[1]}; "
            "only adds of two tensors of one shape (no alpha, no broadcasting) are supported"
        )
    return None


def _emit_same_shape_binary(ctx: LoweringContext, operands, op: str, build: Callable) -> LoweredTensor:
    """``op`` of two same-shape tensors by the kernel ``build(stored shape)`` returns: both
    operands in the left one's storage order (the right one transposed only if it differs)."""
    order = ctx.stored(operands[0]).axis_order
    left, right = (ctx.tensor(operand, order) for operand in operands)
    shape = left.stored_shape
    output = ctx.program.call(
        (op, shape), f"{op}_{_shape_text(shape)}", lambda: build(shape), [left.expr, right.expr], shape
    )
    return LoweredTensor(output, left.shape, left.order)


def lower_add(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    operands = add_operands(ctx.view, node)
    return _emit_same_shape_binary(ctx, operands, "add", lambda shape: add_primfunc(shape, ctx.lanes))


# --- subtract -----------------------------------------------------------------------------------

SUB_FUNCTIONS: tuple[Callable, ...] = (operator.sub, operator.isub, torch.sub)
SUB_METHODS: tuple[str, ...] = ("sub", "sub_")


def sub_problem(view: GraphView, node: fx.Node) -> str | None:
    if same_shape_operands(view, node) is None:
        shapes = _operand_descriptions(view, node)
        return (
            f"subtracts {shapes[1]} from {shapes[0]}; "
            "only the difference of two tensors of one shape (no alpha, no broadcasting) is supported"
        )
    return None


def lower_sub(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    """FastViT's ``mixer(x) - norm(x)``."""
    return _emit_same_shape_binary(
        ctx,
        same_shape_operands(ctx.view, node),
        "sub",
        lambda shape: broadcast_binary_primfunc(shape, shape, "sub", ctx.lanes),
    )


# --- pooling ------------------------------------------------------------------------------------


def _window(view: GraphView, node: fx.Node, kernel_size, stride, padding, dilation=1) -> PoolWindow:
    batch, channels, height, width = view.shape(_input(node))
    out_height, out_width = view.shape(node)[2:]
    return PoolWindow(
        batch,
        height,
        width,
        channels,
        out_height,
        out_width,
        int_pair(kernel_size, "kernel_size"),
        # torch.max_pool2d spells "stride = kernel" as an empty list, the F. functions as None.
        int_pair(stride if stride not in (None, [], ()) else kernel_size, "stride"),
        int_pair(padding, "padding"),
        int_pair(dilation, "dilation"),
    )


# A pool is an nn.MaxPool2d / nn.AvgPool2d module or an F.max_pool2d (torch.max_pool2d) / F.avg_pool2d call: all
# spell the same parameters (the module's attributes, the function's arguments in this order).
_MAX_POOL_PARAMETERS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_MAX_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}
_AVG_POOL_PARAMETERS = (
    "input",
    "kernel_size",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
    "divisor_override",
)
_AVG_POOL_DEFAULTS = {
    "stride": None,
    "padding": 0,
    "ceil_mode": False,
    "count_include_pad": True,
    "divisor_override": None,
}


def _pool_parameters(view: GraphView, node: fx.Node, names: tuple[str, ...], defaults: dict) -> dict:
    module = view.module(node)
    if module is not None:
        return {name: getattr(module, name) for name in names[1:]}
    return bind_arguments(node, names, defaults)


def max_pool_problem(view: GraphView, node: fx.Node) -> str | None:
    pool = _pool_parameters(view, node, _MAX_POOL_PARAMETERS, _MAX_POOL_DEFAULTS)
    if pool["return_indices"]:
        return "return_indices=True; only the pooled values are supported"
    return _feature_map_problem(view, node, "max pooling")


def lower_max_pool(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    pool = _pool_parameters(ctx.view, node, _MAX_POOL_PARAMETERS, _MAX_POOL_DEFAULTS)
    window = _window(ctx.view, node, pool["kernel_size"], pool["stride"], pool["padding"], pool["dilation"])
    x = ctx.tensor(_input(node))
    kh, kw = window.kernel_size
    # An int8 build stores a pool's input as uint8 codes when the plan quantises it with the
    # pool's output parameters (quantize.plan: Int8Plan.pooled): the pool then runs on the codes
    # and its output is those of the pooled tensor, a quarter of the bytes and no quantise kernel.
    codes = x.dtype == "uint8"
    lanes = ctx.lanes * 4 if codes else ctx.lanes  # bytes per vector register
    output = ctx.program.call(
        ("max_pool2d", window, x.dtype),
        f"max_pool{kh}x{kw}s{window.stride[0]}_{_shape_text(window.in_shape)}" + ("_u8" if codes else ""),
        lambda: max_pool2d_primfunc(window, lanes, x.dtype),
        [x.expr],
        window.out_shape,
        x.dtype,
    )
    return LoweredTensor(output, ctx.view.shape(node), dtype=x.dtype, quant=x.quant)


def avg_pool_problem(view: GraphView, node: fx.Node) -> str | None:
    problem = _feature_map_problem(view, node, "average pooling")
    if problem:
        return problem
    pool = _pool_parameters(view, node, _AVG_POOL_PARAMETERS, _AVG_POOL_DEFAULTS)
    window = _window(view, node, pool["kernel_size"], pool["stride"], pool["padding"])
    floor_height = (window.height + 2 * window.padding[0] - window.kernel_size[0]) // window.stride[0] + 1
    floor_width = (window.width + 2 * window.padding[1] - window.kernel_size[1]) // window.stride[1] + 1
    if (floor_height, floor_width) != (window.out_height, window.out_width):
        return (
            "ceil_mode=True adds partial windows here; average pooling supports ceil_mode only when it changes nothing"
        )
    return None


def _emit_avg_pool(
    ctx: LoweringContext, node: fx.Node, window: PoolWindow, count_include_pad: bool, divisor_override
) -> LoweredTensor:
    x = ctx.tensor(_input(node))
    kh, kw = window.kernel_size
    output = ctx.program.call(
        ("avg_pool2d", window, count_include_pad, divisor_override),
        f"avg_pool{kh}x{kw}s{window.stride[0]}_{_shape_text(window.in_shape)}",
        lambda: avg_pool2d_primfunc(window, ctx.lanes, count_include_pad, divisor_override),
        [x.expr],
        window.out_shape,
    )
    return LoweredTensor(output, ctx.view.shape(node))


def lower_avg_pool(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    pool = _pool_parameters(ctx.view, node, _AVG_POOL_PARAMETERS, _AVG_POOL_DEFAULTS)
    window = _window(ctx.view, node, pool["kernel_size"], pool["stride"], pool["padding"])
    return _emit_avg_pool(ctx, node, window, pool["count_include_pad"], pool["divisor_override"])


def _adaptive_output_size(view: GraphView, node: fx.Node) -> tuple[int, int]:
    return tuple(view.shape(node)[2:])


def adaptive_avg_pool_problem(view: GraphView, node: fx.Node) -> str | None:
    return _feature_map_problem(view, node, "adaptive average pooling")


def lower_adaptive_avg_pool(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    x = ctx.tensor(_input(node))
    batch, height, width, channels = x.stored_shape
    out_height, out_width = _adaptive_output_size(ctx.view, node)
    if (out_height, out_width) != (1, 1) and not (height % out_height or width % out_width):
        window = (height // out_height, width // out_width)
        return _emit_avg_pool(ctx, node, _window(ctx.view, node, window, window, 0), True, None)
    if (out_height, out_width) != (1, 1):
        # Windows of unequal size (or repeated, when the output is larger than the input).
        out_shape = (batch, out_height, out_width, channels)
        output = ctx.program.call(
            ("adaptive_avg_pool2d", x.stored_shape, (out_height, out_width)),
            f"adaptive_avg_pool_{_shape_text(x.stored_shape)}_to_{out_height}x{out_width}",
            lambda: adaptive_avg_pool2d_primfunc(x.stored_shape, (out_height, out_width), ctx.lanes),
            [x.expr],
            out_shape,
        )
        return LoweredTensor(output, ctx.view.shape(node))
    return LoweredTensor(_emit_global_avg_pool(ctx, x), (batch, channels, 1, 1))


def _emit_global_avg_pool(ctx: LoweringContext, x: LoweredTensor):
    """The (B, 1, 1, C) mean over all pixels of an NHWC map."""
    batch, _, _, channels = x.stored_shape
    return ctx.program.call(
        ("global_avg_pool", x.stored_shape),
        f"global_avg_pool_{_shape_text(x.stored_shape)}",
        lambda: global_avg_pool_primfunc(x.stored_shape, ctx.lanes),
        [x.expr],
        (batch, 1, 1, channels),
    )


# --- mean over the spatial axes -----------------------------------------------------------------


def _mean_arguments(node: fx.Node) -> dict:
    return bind_arguments(node, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False, "dtype": None})


def _spatial_dims(dim, rank: int) -> bool:
    dims = [dim] if isinstance(dim, int) else list(dim) if isinstance(dim, (list, tuple)) else None
    return dims is not None and sorted(d % rank for d in dims) == [2, 3]


def mean_problem(view: GraphView, node: fx.Node) -> str | None:
    problem = _feature_map_problem(view, node, "mean")
    if problem:
        return problem
    arguments = _mean_arguments(node)
    if not _spatial_dims(arguments["dim"], 4) or arguments["dtype"] is not None:
        return (
            f"a mean over dim={arguments['dim']!r}; supported is the mean over the spatial axes (2, 3) of a "
            "(B, C, H, W) tensor (global average pooling), keepdim either way"
        )
    return None


def lower_mean(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    x = ctx.tensor(_input(node))
    batch, channels = x.shape[:2]
    output = _emit_global_avg_pool(ctx, x)
    if _mean_arguments(node)["keepdim"]:
        return LoweredTensor(output, (batch, channels, 1, 1))
    return LoweredTensor(ctx.program.reshape(output, (batch, channels)), (batch, channels))


# --- multiply (and squeeze-and-excitation's broadcast gate) -------------------------------------

MUL_FUNCTIONS: tuple[Callable, ...] = (operator.mul, operator.imul, torch.mul)
MUL_METHODS: tuple[str, ...] = ("mul", "mul_")


def _broadcast_operands(view: GraphView, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """(full, other) when ``node`` combines two 4-d tensors whose shapes are equal or where one is
    the other with 1s on its spatial axes (a per-channel gate), else None."""
    arguments = bind_arguments(node, ("input", "other"))
    left, right = arguments.get("input"), arguments.get("other")
    if len(node.args) + len(node.kwargs) != 2 or not (view.is_tensor(left) and view.is_tensor(right)):
        return None
    if view.constant(left) is not None or view.constant(right) is not None:
        return None  # a constant operand: constant_scale
    left_shape, right_shape = view.shape(left), view.shape(right)
    if len(left_shape) != 4 or len(right_shape) != 4:
        return None

    def gate_of(full, gate) -> bool:
        return gate[:2] == full[:2] and all(g in (1, f) for g, f in zip(gate[2:], full[2:]))

    if gate_of(left_shape, right_shape):
        return left, right
    if gate_of(right_shape, left_shape):
        return right, left
    return None


def constant_scale(view: GraphView, node: fx.Node) -> tuple[fx.Node, torch.Tensor, int] | None:
    """(tensor operand, constant, axis) when ``node`` multiplies a float32 tensor by a float32
    graph constant (``get_attr``) that varies along at most one of its axes ("per-channel",
    e.g. ConvNeXt's (C, 1, 1) layer scale), broadcasting without adding axes; ``axis`` is that
    tensor axis (the last when the constant is one value). Else None."""
    arguments = bind_arguments(node, ("input", "other"))
    left, right = arguments.get("input"), arguments.get("other")
    if len(node.args) + len(node.kwargs) != 2:
        return None
    for tensor, constant_node in ((left, right), (right, left)):
        constant = view.constant(constant_node)
        shape = view.shape(tensor)
        if constant is None or shape is None or view.constant(tensor) is not None:
            continue
        if constant.dtype != torch.float32 or view.dtype(tensor) != torch.float32 or constant.dim() > len(shape):
            return None
        offset = len(shape) - constant.dim()
        varying = [offset + i for i, size in enumerate(constant.shape) if size != 1]
        if len(varying) > 1 or any(constant.shape[axis - offset] != shape[axis] for axis in varying):
            return None
        return tensor, constant, varying[0] if varying else len(shape) - 1
    return None


def mul_problem(view: GraphView, node: fx.Node) -> str | None:
    if _broadcast_operands(view, node) is None and constant_scale(view, node) is None:
        shapes = _operand_descriptions(view, node)
        return (
            f"multiplies {shapes[0]} and {shapes[1]}; supported is the product of two (B, C, H, W) tensors of one "
            "shape, of a map and a (B, C, 1, 1) per-channel gate, or of a tensor and a float32 constant of the model "
            "that varies along one axis at most (a per-channel scale such as a (C, 1, 1) layer scale)"
        )
    return None


def _lower_constant_scale(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    """The tensor times a per-axis constant, on the broadcast-multiply kernel with the scaled
    axis stored last (where the kernel's vectors run); the result keeps that storage order."""
    source, constant, axis = constant_scale(ctx.view, node)
    x = ctx.stored(source)
    if x.axis_order[-1] != axis:
        x = ctx.tensor(source, tuple(a for a in x.axis_order if a != axis) + (axis,))
    shape = x.stored_shape
    scale_shape = (1,) * (len(shape) - 1) + (shape[-1],)
    scale = np.broadcast_to(constant.detach().cpu().numpy().reshape(-1), (shape[-1],)).astype(np.float32)
    output = ctx.program.call(
        ("mul", shape, scale_shape),
        f"mul_{_shape_text(shape)}_by_{_shape_text(scale_shape)}",
        lambda: broadcast_binary_primfunc(shape, scale_shape, "mul", ctx.lanes),
        [x.expr, ctx.program.constant(scale.reshape(scale_shape))],
        shape,
    )
    return LoweredTensor(output, x.shape, x.order)


def lower_mul(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    if _broadcast_operands(ctx.view, node) is None:
        return _lower_constant_scale(ctx, node)
    full, other = (ctx.tensor(operand) for operand in _broadcast_operands(ctx.view, node))
    shape, other_shape = full.stored_shape, other.stored_shape
    output = ctx.program.call(
        ("mul", shape, other_shape),
        f"mul_{_shape_text(shape)}_by_{_shape_text(other_shape)}",
        lambda: broadcast_binary_primfunc(shape, other_shape, "mul", ctx.lanes),
        [full.expr, other.expr],
        shape,
    )
    return LoweredTensor(output, full.shape)


# --- flatten / view / reshape -------------------------------------------------------------------


def flatten_problem(view: GraphView, node: fx.Node) -> str | None:
    in_shape, out_shape = view.shape(_input(node)), view.shape(node)
    if in_shape is None or out_shape is None:
        return "its input or output is not a tensor"
    flattened = len(out_shape) == 2 and out_shape[0] == in_shape[0] and len(in_shape) in (2, 4)
    if not flattened:
        return (
            f"reshapes {in_shape} to {out_shape}; "
            "only flattening a (B, C, H, W) or (B, F) tensor to (B, features) is supported"
        )
    return None


def lower_flatten(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    x = ctx.tensor(_input(node))
    out_shape = ctx.view.shape(node)
    if not x.is_feature_map:
        return x
    batch, channels, height, width = x.shape
    source = x.expr
    if height * width != 1:
        # torch flattens in (C, H, W) order: go back to NCHW first.
        source = ctx.program.call(
            ("to_nchw", x.stored_shape),
            f"to_nchw_{_shape_text(x.stored_shape)}",
            lambda: nhwc_to_nchw_primfunc(x.stored_shape, ctx.lanes),
            [x.expr],
            x.shape,
        )
    return LoweredTensor(ctx.program.reshape(source, out_shape), out_shape)


# --- identity-like ------------------------------------------------------------------------------


def lower_passthrough(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    return ctx.stored(_input(node))


def float_problem(view: GraphView, node: fx.Node) -> str | None:
    """``x.float()`` is the identity on the float32 tensors a compiled model computes."""
    if view.dtype(_input(node)) != torch.float32:
        return f"converts a {view.dtype(_input(node))} tensor to float32; only float32 tensors are compiled"
    return None


def dropout_problem(view: GraphView, node: fx.Node) -> str | None:
    if view.module(node).training:
        return "dropout is in training mode; call model.eval() first (eval-mode dropout is the identity)"
    return None


def stochastic_depth_problem(view: GraphView, node: fx.Node) -> str | None:
    """torchvision's StochasticDepth module, or the ``stochastic_depth(input, p, mode, training)``
    call fx traces it to: the identity when not training."""
    module = view.module(node)
    training = (
        module.training
        if module is not None
        else bind_arguments(node, ("input", "p", "mode", "training"), {"training": True})["training"]
    )
    if training:
        return "stochastic depth is in training mode; call model.eval() first (in eval mode it is the identity)"
    return None


# --- concat -------------------------------------------------------------------------------------


def concat_problem(view: GraphView, node: fx.Node) -> str | None:
    arguments = bind_arguments(node, ("tensors", "dim"), {"dim": 0})
    tensors = arguments["tensors"]
    shapes = [view.shape(tensor) for tensor in tensors] if isinstance(tensors, (list, tuple)) else [None]
    if any(shape is None for shape in shapes) or len({len(shape) for shape in shapes}) != 1:
        return "its inputs are not a list of tensors of one rank"
    rank = len(shapes[0])
    if rank not in (2, 4) or arguments["dim"] not in (1, 1 - rank):
        return (
            f"concatenates rank-{rank} tensors on dim {arguments['dim']}; "
            "only channel concat (dim=1 of 4-d or 2-d tensors) is supported"
        )
    return None


def lower_concat(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    parts = [ctx.tensor(tensor) for tensor in bind_arguments(node, ("tensors", "dim"))["tensors"]]
    out_shape = ctx.view.shape(node)
    # A (B, F) tensor is a (B, 1, 1, F) map (views): one kernel for both ranks.
    maps = [part.stored_shape if part.is_feature_map else (part.shape[0], 1, 1, part.shape[1]) for part in parts]
    exprs = [
        part.expr if part.is_feature_map else ctx.program.reshape(part.expr, shape) for part, shape in zip(parts, maps)
    ]
    stored_out = (*maps[0][:3], sum(shape[3] for shape in maps))
    output = ctx.program.call(
        ("concat", tuple(maps)),
        f"concat_{len(maps)}_{_shape_text(stored_out)}",
        lambda: concat_channels_primfunc(maps, ctx.lanes),
        exprs,
        stored_out,
    )
    if len(out_shape) == 2:
        output = ctx.program.reshape(output, out_shape)
    return LoweredTensor(output, out_shape)


# --- batch norm that could not be folded --------------------------------------------------------


def batchnorm_problem(view: GraphView, node: fx.Node) -> str | None:
    bn: nn.BatchNorm2d = view.module(node)
    if bn.training or bn.running_mean is None:
        return "batch norm in training mode or without running statistics; call model.eval() (with tracked statistics)"
    return _feature_map_problem(view, node, "batch norm")


def lower_batchnorm(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    bn: nn.BatchNorm2d = ctx.view.module(node)
    x = ctx.tensor(_input(node))
    scale = 1.0 / np.sqrt(bn.running_var.detach().double().cpu().numpy() + bn.eps)
    shift = -bn.running_mean.detach().double().cpu().numpy() * scale
    if bn.affine:
        gamma = bn.weight.detach().double().cpu().numpy()
        scale, shift = scale * gamma, shift * gamma + bn.bias.detach().double().cpu().numpy()
    shape = x.stored_shape
    output = ctx.program.call(
        ("channel_affine", shape),
        f"batch_norm_{_shape_text(shape)}",
        lambda: channel_affine_primfunc(shape, ctx.lanes),
        [x.expr, ctx.program.constant(scale.astype(np.float32)), ctx.program.constant(shift.astype(np.float32))],
        shape,
    )
    return LoweredTensor(output, x.shape)
