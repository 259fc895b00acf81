"""Lowering of the channel rearrangements: channel shuffle, and ``chunk`` / ``split`` on channels
with the ``getitem`` that picks a part.

Activations are NHWC, so a channel range is the innermost, contiguous axis of each pixel:
a part of a split is a copy kernel over pixels (``slice_channels_primfunc``; a zero-copy view
with an offset is not something Relax's ``call_tir`` can hand a kernel), and a channel shuffle
is a gather over channels (``shuffle_channels_primfunc``). When every user of a shuffle splits
it on channels (ShuffleNet V2: ``channel_shuffle`` then ``chunk(2, dim=1)``), the shuffle is not
materialised: each part gathers its channels straight from the shuffle's input, one pass over
memory instead of two.

Refused: a shuffle of a non-4-d tensor, a split on any axis but channels (dim 1 of a 4-d
tensor), a split whose result is used other than by indexing it with a constant, indexing
anything but such a split.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from subp_fx.codegen.kernels.layout import shuffle_channels_primfunc, slice_channels_primfunc
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
    if not _is_split(view, node.args[0]) or not isinstance(node.args[1], int):
        what = "a tensor" if view.is_tensor(node.args[0]) else f"the value of {node.args[0]}"
        return f"indexes {what}; only picking a part of a chunk/split on channels by a constant index is supported"
    return None


def lower_getitem(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    return ctx.values[node.args[0]][node.args[1]]


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
