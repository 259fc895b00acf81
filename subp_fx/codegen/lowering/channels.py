"""Lowering of the channel rearrangements: channel shuffle, ``chunk`` / ``split`` on channels
with the ``getitem`` that picks a part, and slicing a tensor (``x[:, :c]``, ``x[:, :, ::2]``).

Activations are NHWC, so a channel range is the innermost, contiguous axis of each pixel:
a part of a split is a copy kernel over pixels (``slice_channels_primfunc``; a zero-copy view
with an offset is not something Relax's ``call_tir`` can hand a kernel), and a channel shuffle
is a gather over channels (``shuffle_channels_primfunc``). When every user of a shuffle splits
it on channels (ShuffleNet V2: ``channel_shuffle`` then ``chunk(2, dim=1)``), the shuffle is not
materialised: each part gathers its channels straight from the shuffle's input, one pass over
memory instead of two.

A slice ``x[index]`` of a (B, C, H, W) or (B, F) tensor whose index holds slices only (and one
Ellipsis) is a copy: a channel range alone on the split's slice kernel, anything else one
strided copy (``strided_slice_primfunc``), vectorised over the channel range.

Refused: a shuffle of a non-4-d tensor, a split on any axis but channels (dim 1 of a 4-d
tensor), a split whose result is used other than by indexing it with a constant; indexing by
integers, None, tensors or values computed in the graph, slices of other ranks, a channel
step other than 1, empty slices.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from subp_fx.codegen.kernels.layout import shuffle_channels_primfunc, slice_channels_primfunc, strided_slice_primfunc
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor, bind_arguments

CHANNEL_SHUFFLE_FUNCTIONS = (torch.channel_shuffle, torch.native_channel_shuffle)
SPLIT_FUNCTIONS = (torch.chunk, torch.split)
SPLIT_METHODS = ("chunk", "split")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


@dataclass(frozen=True)
class ShuffledChannels:
    """A channel shuffle left unmaterialised: its users (channel splits) gather from ``source``."""

    source: LoweredTensor
    groups: int


# --- splits: chunk / split on channels ------------------------------------------------------------


def _split_arguments(node: fx.Node) -> dict:
    if node.target in ("chunk", torch.chunk):
        return bind_arguments(node, ("input", "chunks", "dim"), {"dim": 0})
    return bind_arguments(node, ("input", "split_size_or_sections", "dim"), {"dim": 0})


def _is_split(view: GraphView, node) -> bool:
    return isinstance(node, fx.Node) and (
        (node.op == "call_function" and node.target in SPLIT_FUNCTIONS)
        or (node.op == "call_method" and node.target in SPLIT_METHODS)
    )


def split_problem(view: GraphView, node: fx.Node) -> str | None:
    arguments = _split_arguments(node)
    shape = view.shape(arguments["input"])
    if shape is None or len(shape) != 4 or arguments["dim"] not in (1, -3):
        return (
            f"splits a tensor of shape {shape} on dim {arguments['dim']!r}; only chunk/split on the channels "
            "(dim=1) of a (B, C, H, W) tensor is supported"
        )
    if view.part_shapes(node) is None:
        return "its result is not a tuple of tensors"
    for user in node.users:
        if not (user.op == "call_function" and user.target is operator.getitem and isinstance(user.args[1], int)):
            return f"its parts are used by {view.describe(user)}; only picking a part by a constant index is supported"
    return None


def lower_split(ctx: LoweringContext, node: fx.Node) -> tuple[LoweredTensor | None, ...]:
    """One kernel per part that is used (a part nobody picks is not computed)."""
    source = ctx.values[_split_arguments(node)["input"]]
    parts = ctx.view.part_shapes(node)
    used = {user.args[1] % len(parts) for user in node.users}
    values: list[LoweredTensor | None] = []
    start = 0
    for index, part in enumerate(parts):
        values.append(_emit_channel_range(ctx, source, start, part) if index in used else None)
        start += part[1]
    return tuple(values)


def _emit_channel_range(ctx: LoweringContext, source, start: int, part: tuple[int, ...]) -> LoweredTensor:
    """Channels ``start`` to ``start + C`` of ``source`` (a tensor, or a pending shuffle)."""
    count = part[1]
    if isinstance(source, ShuffledChannels):
        shape, groups = source.source.stored_shape, source.groups
        expr = ctx.program.call(
            ("shuffle_channels", shape, groups, start, count),
            f"shuffle{groups}_channels_{start}to{start + count}_{_shape_text(shape)}",
            lambda: shuffle_channels_primfunc(shape, groups, ctx.lanes, start, count),
            [source.source.expr],
            (shape[0], shape[1], shape[2], count),
        )
        return LoweredTensor(expr, part)
    if start == 0 and count == source.shape[1]:
        return source
    shape = source.stored_shape
    expr = ctx.program.call(
        ("slice_channels", shape, start, count),
        f"slice_channels_{start}to{start + count}_{_shape_text(shape)}",
        lambda: slice_channels_primfunc(shape, count, ctx.lanes, start),
        [source.expr],
        (shape[0], shape[1], shape[2], count),
    )
    return LoweredTensor(expr, part)


def getitem_problem(view: GraphView, node: fx.Node) -> str | None:
    if _is_split(view, node.args[0]):
        if not isinstance(node.args[1], int):
            return f"indexes the parts of {node.args[0].name} by {node.args[1]!r}; only a constant index is supported"
        return None
    if view.is_tensor(node.args[0]):
        return _slice_problem(view, node)
    return (
        f"indexes the value of {node.args[0]}; supported are picking a part of a chunk/split on channels and "
        "slicing a tensor"
    )


def lower_getitem(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    if _is_split(ctx.view, node.args[0]):
        return ctx.values[node.args[0]][node.args[1]]
    return _lower_slice(ctx, node)


# --- slicing a tensor: x[:, a:b], x[..., ::2, ::2] --------------------------------------------------

_SLICE_RANKS = (2, 4)  # (B, F) and (B, C, H, W): the ranks stored as (B, [H, W,] C) maps


def _slice_ranges(view: GraphView, node: fx.Node) -> list[tuple[int, int, int]] | str:
    """(start, step, count) per torch axis of ``x[index]``, or why the index is not supported."""
    shape, index = view.shape(node.args[0]), node.args[1]
    items = list(index) if isinstance(index, tuple) else [index]
    if sum(item is Ellipsis for item in items) > 1 or not all(isinstance(i, slice) or i is Ellipsis for i in items):
        return (
            f"its index {index!r} holds something other than slices and one Ellipsis; integers (which drop an "
            "axis), None (which adds one), tensors and values computed in the graph are not supported"
        )
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (len(shape) - len(items) + 1)
    items += [slice(None)] * (len(shape) - len(items))
    if len(items) != len(shape):
        return f"its index {index!r} has more entries than the {len(shape)} axes of the tensor"
    ranges = []
    for item, size in zip(items, shape):
        if not all(bound is None or type(bound) is int for bound in (item.start, item.stop, item.step)):
            return f"its index {index!r} has a bound that is not a constant integer"
        start, stop, step = item.indices(size)
        if step < 1:
            return f"its index {index!r} has a step of {step}; torch slices take positive steps"
        ranges.append((start, step, len(range(start, stop, step))))
    return ranges


def _slice_problem(view: GraphView, node: fx.Node) -> str | None:
    shape = view.shape(node.args[0])
    if len(shape) not in _SLICE_RANKS:
        return f"slices a tensor of shape {shape}; slicing is lowered for (B, C, H, W) and (B, F) tensors"
    ranges = _slice_ranges(view, node)
    if isinstance(ranges, str):
        return ranges
    if any(count == 0 for _, _, count in ranges):
        return f"its index {node.args[1]!r} selects nothing on some axis; an empty tensor is not supported"
    if ranges[1][1] != 1:
        return (
            f"its index {node.args[1]!r} takes every {ranges[1][1]}th channel (or feature); supported are "
            "contiguous channel ranges (step 1) and any step on the batch and spatial axes"
        )
    return None


def _lower_slice(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    """A channel range alone is the split's slice kernel; anything else one strided copy over the
    map. A (B, F) tensor is sliced as the (B, 1, 1, F) map it is stored as (reshapes are views)."""
    x = ctx.tensor(node.args[0])
    ranges = _slice_ranges(ctx.view, node)
    out_shape = ctx.view.shape(node)
    if all(count == size for (_, _, count), size in zip(ranges, x.shape)):
        return x
    if len(x.shape) == 2:
        ranges = [ranges[0], ranges[1], (0, 1, 1), (0, 1, 1)]
        as_map = ctx.program.reshape(x.expr, (x.shape[0], 1, 1, x.shape[1]))
        mapped = LoweredTensor(as_map, (x.shape[0], x.shape[1], 1, 1))
    else:
        mapped = x
    (b, _, nb), (c, _, nc), (h, sh, nh), (w, sw, nw) = ranges
    if (b, nb, h, nh, w, nw) == (0, mapped.shape[0], 0, mapped.shape[2], 0, mapped.shape[3]):
        sliced = _emit_channel_range(ctx, mapped, c, (nb, nc, nh, nw))
    else:
        shape, out_nhwc = mapped.stored_shape, (nb, nh, nw, nc)
        begin, steps = (b, h, w, c), (ranges[0][1], sh, sw)
        expr = ctx.program.call(
            ("strided_slice", shape, begin, steps, out_nhwc),
            f"slice_{_shape_text(shape)}_from_{_shape_text(begin)}_by_{_shape_text(steps)}_to_{_shape_text(out_nhwc)}",
            lambda: strided_slice_primfunc(shape, begin, steps, out_nhwc, ctx.lanes),
            [mapped.expr],
            out_nhwc,
        )
        sliced = LoweredTensor(expr, (nb, nc, nh, nw))
    if len(x.shape) == 2:
        return LoweredTensor(ctx.program.reshape(sliced.expr, out_shape), out_shape)
    return sliced


# --- channel shuffle ------------------------------------------------------------------------------


def _shuffle_groups(view: GraphView, node: fx.Node) -> int:
    module = view.module(node)
    return module.groups if module is not None else bind_arguments(node, ("input", "groups"))["groups"]


def channel_shuffle_problem(view: GraphView, node: fx.Node) -> str | None:
    source = node.args[0] if node.args else node.kwargs.get("input")
    shape = view.shape(source)
    if shape is None or len(shape) != 4:
        return f"shuffles a tensor of shape {shape}; a channel shuffle is lowered for (B, C, H, W) tensors only"
    return None


def lower_channel_shuffle(ctx: LoweringContext, node: fx.Node) -> LoweredTensor | ShuffledChannels:
    x = ctx.tensor(node.args[0] if node.args else node.kwargs["input"])
    groups = int(_shuffle_groups(ctx.view, node))
    if node.users and all(_is_split(ctx.view, user) and split_problem(ctx.view, user) is None for user in node.users):
        return ShuffledChannels(x, groups)
    shape = x.stored_shape
    expr = ctx.program.call(
        ("shuffle_channels", shape, groups, 0, shape[3]),
        f"shuffle{groups}_channels_{_shape_text(shape)}",
        lambda: shuffle_channels_primfunc(shape, groups, ctx.lanes),
        [x.expr],
        shape,
    )
    return LoweredTensor(expr, x.shape)
