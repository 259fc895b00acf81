"""Layout kernels: NCHW <-> NHWC transposes, any transpose, channel slice and strided slice, channel concat,
channel shuffle (all channels last).

The compiled model keeps activations NHWC from its input to its logits: the only transpose is
:func:`nchw_to_nhwc_primfunc` on the input (and :func:`nhwc_to_nchw_primfunc` where a 4-d tensor
leaves the NHWC world: a flatten of a map larger than 1x1, or a 4-d model output).

:func:`transpose_primfunc` moves a tensor between any two storage orders: the lowering keeps a
permute as a change of order alone and calls it only where a handler needs another order than
the one a tensor has (e.g. a conv reading a map a model left permuted).

Schedules: parallel over (batch, row) or (batch, channel), the innermost contiguous axis
vectorised. Concat selects its input by channel range; its channel loop is split in vectors
whose width divides every input's channel count, so each vector lies within one input and
the selection is uniform across its lanes (LLVM then emits plain vector copies, no selects).
"""

from __future__ import annotations

import math
from functools import reduce

from tvm import s_tir, te, tirx

from subp_fx.codegen.kernels.loops import DTYPE, lane_chunk, vectorize_split


def _scheduled(arguments: list[te.Tensor], vector_extent: int, lanes: int) -> tirx.PrimFunc:
    """The 4-D copy computing ``arguments[-1]``, parallel over its two outer loops, its innermost
    loop split into vectors that divide ``vector_extent``."""
    sch = s_tir.Schedule(te.create_prim_func(arguments))
    outer, second, _, innermost = sch.get_loops(sch.get_sblock(arguments[-1].op.name))
    sch.parallel(sch.fuse(outer, second))
    vectorize_split(sch, innermost, vector_extent, lanes)
    return sch.mod["main"]


def nchw_to_nhwc_primfunc(shape_nchw: tuple[int, int, int, int], lanes: int) -> tirx.PrimFunc:
    """(B, C, H, W) -> (B, H, W, C)."""
    batch, channels, height, width = shape_nchw
    x = te.placeholder(shape_nchw, DTYPE, name="x")
    out = te.compute((batch, height, width, channels), lambda b, h, w, c: x[b, c, h, w], name="to_nhwc")
    return _scheduled([x, out], channels, lanes)


def nhwc_to_nchw_primfunc(shape_nhwc: tuple[int, int, int, int], lanes: int) -> tirx.PrimFunc:
    """(B, H, W, C) -> (B, C, H, W)."""
    batch, height, width, channels = shape_nhwc
    x = te.placeholder(shape_nhwc, DTYPE, name="x")
    out = te.compute((batch, channels, height, width), lambda b, c, h, w: x[b, h, w, c], name="to_nchw")
    return _scheduled([x, out], width, lanes)


def slice_channels_primfunc(
    shape_nhwc: tuple[int, int, int, int], keep: int, lanes: int, start: int = 0
) -> tirx.PrimFunc:
    """(B, H, W, C) -> (B, H, W, keep): channels ``start`` to ``start + keep`` (the first ``keep``
    drop a padded conv's extras; a ``chunk`` / ``split`` on channels is one slice per part)."""
    batch, height, width, channels = shape_nhwc
    if not (0 <= start and keep > 0 and start + keep <= channels):
        raise ValueError(f"channels {start}..{start + keep} are not within the {channels} of {shape_nhwc}")
    return strided_slice_primfunc(shape_nhwc, (0, 0, 0, start), (1, 1, 1), (batch, height, width, keep), lanes)


def strided_slice_primfunc(
    shape_nhwc: tuple[int, int, int, int],
    begin: tuple[int, int, int, int],
    steps: tuple[int, int, int],
    out_shape_nhwc: tuple[int, int, int, int],
    lanes: int,
) -> tirx.PrimFunc:
    """(B, H, W, C) -> ``out_shape_nhwc``: output [b, h, w, c] is input [begin_b + b * step_b,
    begin_h + h * step_h, begin_w + w * step_w, begin_c + c]: a strided slice of batch, rows and
    columns (``steps``, each >= 1) and a contiguous range of channels (step 1, so the copy stays
    vectorised over channels). Refuses (``ValueError``) a slice reaching outside the input."""
    for axis, (size, first, step, count) in enumerate(zip(shape_nhwc, begin, (*steps, 1), out_shape_nhwc)):
        if not (step >= 1 and count >= 1 and 0 <= first and first + (count - 1) * step < size):
            raise ValueError(
                f"axis {axis} (of NHWC): {count} element(s) from {first} in steps of {step} are not within the "
                f"{size} of {shape_nhwc}"
            )
    x = te.placeholder(shape_nhwc, DTYPE, name="x")
    (b0, h0, w0, c0), (sb, sh, sw) = begin, steps
    out = te.compute(
        out_shape_nhwc,
        lambda b, h, w, c: x[b0 + b * sb, h0 + h * sh, w0 + w * sw, c0 + c],
        name="slice_channels",
    )
    return _scheduled([x, out], out_shape_nhwc[3], lanes)


def shuffle_channels_primfunc(
    shape_nhwc: tuple[int, int, int, int], groups: int, lanes: int, start: int = 0, count: int | None = None
) -> tirx.PrimFunc:
    """(B, H, W, C) -> (B, H, W, count): channels ``start`` to ``start + count`` (default: all) of
    ``torch.channel_shuffle(x, groups)``, whose channel ``k`` is input channel
    ``(k % groups) * (C // groups) + k // groups``.

    A gather over channels: each output vector of channels is stored contiguously, its lanes read
    from ``groups`` strided input positions. Taking a range directly serves a shuffle followed by
    ``chunk`` (ShuffleNet's channel split) without materialising the whole shuffled map.
    """
    batch, height, width, channels = shape_nhwc
    count = channels - start if count is None else count
    if channels % groups or not (0 <= start and count > 0 and start + count <= channels):
        raise ValueError(
            f"cannot shuffle channels {start}..{start + count} of {shape_nhwc} in {groups} groups: the groups must "
            "divide the channels and the range lie within them"
        )
    per_group = channels // groups
    x = te.placeholder(shape_nhwc, DTYPE, name="x")

    def gather(b, h, w, c):
        k = start + c
        return x[b, h, w, tirx.floormod(k, groups) * per_group + tirx.floordiv(k, groups)]

    out = te.compute((batch, height, width, count), gather, name="shuffle_channels")
    return _scheduled([x, out], count, lanes)


def concat_channels_primfunc(shapes_nhwc: list[tuple[int, int, int, int]], lanes: int) -> tirx.PrimFunc:
    """Inputs (B, H, W, C_i) -> (B, H, W, sum C_i), in order."""
    batch, height, width, _ = shapes_nhwc[0]
    counts = [shape[3] for shape in shapes_nhwc]
    offsets = [sum(counts[:index]) for index in range(len(counts))]
    inputs = [te.placeholder(shape, DTYPE, name=f"x{index}") for index, shape in enumerate(shapes_nhwc)]

    def select(b, h, w, c):
        value = inputs[-1][b, h, w, c - offsets[-1]]
        for index in range(len(inputs) - 2, -1, -1):
            value = tirx.if_then_else(c < offsets[index + 1], inputs[index][b, h, w, c - offsets[index]], value)
        return value

    total = sum(counts)
    out = te.compute((batch, height, width, total), select, name="concat")
    # A vector width dividing every count never straddles two inputs.
    return _scheduled([*inputs, out], lane_chunk(reduce(math.gcd, counts), lanes), lanes)


def transpose_primfunc(shape: tuple[int, ...], axes: tuple[int, ...], lanes: int) -> tirx.PrimFunc:
    """x of ``shape`` -> out with ``out.shape[j] = shape[axes[j]]``, as ``numpy.transpose(x, axes)``.

    Parallel over the output's outer axes (all but the last; all of them for a 1-d tensor), the
    last in vectors of contiguous writes (the reads are strided unless ``axes`` keeps the last axis).
    """
    if sorted(axes) != list(range(len(shape))):
        raise ValueError(f"axes {axes} is not a permutation of the {len(shape)} axes of {shape}")
    out_shape = tuple(shape[axis] for axis in axes)
    x = te.placeholder(shape, DTYPE, name="x")

    def read(*index):
        source = [None] * len(shape)
        for position, axis in enumerate(axes):
            source[axis] = index[position]
        return x[tuple(source)]

    out = te.compute(out_shape, read, name="transpose")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    *outer, innermost = sch.get_loops(sch.get_sblock("transpose"))
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    vectorize_split(sch, innermost, out_shape[-1], lanes)
    return sch.mod["main"]
