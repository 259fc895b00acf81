"""Pooling kernels over NHWC: max pool, average pool, global average pool.

Schedules: windowed pools run parallel over (batch, output row); inside, each output pixel
walks its window (taps unrolled) over a vector of channels, accumulating in registers. The
global average pool runs parallel over (batch, channel vector), summing over all pixels in a
vector register. Padding is read under a bounds condition (only the clauses that can fail are
emitted): -inf for max pool, 0 for average pool, as torch pads.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, te, tirx

from subp_fx.codegen.kernels.loops import (
    ACCUMULATOR_SCOPE,
    DTYPE,
    guarded_bounds,
    lane_chunk,
    unroll_then_vectorize_below,
)


@dataclass(frozen=True)
class PoolWindow:
    """A pooling window over an NHWC input ``(batch, height, width, channels)`` giving
    ``out_height x out_width`` outputs (from torch's shape, so ceil_mode is already in it)."""

    batch: int
    height: int
    width: int
    channels: int
    out_height: int
    out_width: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.height, self.width, self.channels)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_height, self.out_width, self.channels)

    def input_row(self, out_row, tap):
        return out_row * self.stride[0] - self.padding[0] + tap * self.dilation[0]

    def input_col(self, out_col, tap):
        return out_col * self.stride[1] - self.padding[1] + tap * self.dilation[1]

    def inside(self, h, w):
        """The condition that input (h, w) exists, or None when every window stays inside."""
        kh, kw = self.kernel_size
        last = (self.input_row(self.out_height - 1, kh - 1), self.input_col(self.out_width - 1, kw - 1))
        return guarded_bounds(h, w, self.height, self.width, self.padding, last)


def _read(x: te.Tensor, window: PoolWindow, pad_value, b, oh, ow, c, s, t):
    h, w = window.input_row(oh, s), window.input_col(ow, t)
    condition = window.inside(h, w)
    if condition is None:
        return x[b, h, w, c]
    return tirx.if_then_else(condition, x[b, h, w, c], pad_value)


def _schedule_window(sch: s_tir.Schedule, reduce_name: str, out_name: str, channels: int, lanes: int) -> None:
    reduce_block = sch.get_sblock(reduce_name)
    b, oh, ow, c, s, t = sch.get_loops(reduce_block)
    chunk = lane_chunk(channels, lanes)
    c_outer, c_inner = sch.split(c, [None, chunk])
    sch.reorder(b, oh, ow, c_outer, s, t, c_inner)
    sch.parallel(sch.fuse(b, oh))
    sch.reverse_compute_at(sch.get_sblock(out_name), c_outer)
    sch.set_scope(reduce_block, 0, ACCUMULATOR_SCOPE)
    sch.unroll(s)
    sch.unroll(t)
    sch.vectorize(c_inner)
    init = sch.decompose_reduction(reduce_block, s)
    # Both stages sit under (batch x row, output column, channel vector).
    unroll_then_vectorize_below(sch, init, 3)
    unroll_then_vectorize_below(sch, sch.get_sblock(out_name), 3)


def max_pool2d_primfunc(window: PoolWindow, lanes: int, dtype: str = DTYPE) -> tirx.PrimFunc:
    """out[b, oh, ow, c] = max over the window (padding counts as the dtype's lowest value: -inf
    for float32, 0 for the uint8 codes of an int8 build, where the max of codes is the code of
    the max because quantising is monotone). ``lanes``: values per vector of this dtype."""
    x = te.placeholder(window.in_shape, dtype, name="x")
    kh, kw = window.kernel_size
    s = te.reduce_axis((0, kh), name="s")
    t = te.reduce_axis((0, kw), name="t")
    lowest = tirx.min_value(dtype)
    pooled = te.compute(
        window.out_shape,
        lambda b, oh, ow, c: te.max(_read(x, window, lowest, b, oh, ow, c, s, t), axis=[s, t]),
        name="max_window",
    )
    out = te.compute(window.out_shape, lambda *index: pooled[index], name="max_pool")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    _schedule_window(sch, "max_window", "max_pool", window.channels, lanes)
    return sch.mod["main"]


def _divisor(window: PoolWindow, count_include_pad: bool, divisor_override: int | None):
    """Per output pixel: what torch divides the window sum by (ceil_mode=False)."""
    kh, kw = window.kernel_size
    if divisor_override is not None:
        return lambda oh, ow: tirx.const(float(divisor_override), DTYPE)
    if count_include_pad or window.inside(window.input_row(0, 0), window.input_col(0, 0)) is None:
        return lambda oh, ow: tirx.const(float(kh * kw), DTYPE)

    def valid_taps(oh, ow):
        top, left = window.input_row(oh, 0), window.input_col(ow, 0)
        rows = tirx.min(top + kh, window.height) - tirx.max(top, 0)
        cols = tirx.min(left + kw, window.width) - tirx.max(left, 0)
        return (rows * cols).astype(DTYPE)

    return valid_taps


def avg_pool2d_primfunc(
    window: PoolWindow, lanes: int, count_include_pad: bool = True, divisor_override: int | None = None
) -> tirx.PrimFunc:
    """out[b, oh, ow, c] = sum over the window / divisor, as torch's avg_pool2d with ceil_mode=False."""
    x = te.placeholder(window.in_shape, DTYPE, name="x")
    kh, kw = window.kernel_size
    s = te.reduce_axis((0, kh), name="s")
    t = te.reduce_axis((0, kw), name="t")
    zero = tirx.const(0.0, DTYPE)
    summed = te.compute(
        window.out_shape,
        lambda b, oh, ow, c: te.sum(_read(x, window, zero, b, oh, ow, c, s, t), axis=[s, t]),
        name="sum_window",
    )
    divisor = _divisor(window, count_include_pad, divisor_override)
    out = te.compute(window.out_shape, lambda b, oh, ow, c: summed[b, oh, ow, c] / divisor(oh, ow), name="avg_pool")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    _schedule_window(sch, "sum_window", "avg_pool", window.channels, lanes)
    return sch.mod["main"]


def global_avg_pool_primfunc(shape_nhwc: tuple[int, int, int, int], lanes: int) -> tirx.PrimFunc:
    """(B, H, W, C) -> (B, 1, 1, C): the mean over all pixels."""
    batch, height, width, channels = shape_nhwc
    x = te.placeholder(shape_nhwc, DTYPE, name="x")
    h = te.reduce_axis((0, height), name="h")
    w = te.reduce_axis((0, width), name="w")
    summed = te.compute((batch, channels), lambda b, c: te.sum(x[b, h, w, c], axis=[h, w]), name="sum_pixels")
    scale = tirx.const(1.0 / (height * width), DTYPE)
    out = te.compute((batch, 1, 1, channels), lambda b, i, j, c: summed[b, c] * scale, name="global_avg_pool")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    sum_block = sch.get_sblock("sum_pixels")
    b, c, h_loop, w_loop = sch.get_loops(sum_block)
    chunk = lane_chunk(channels, lanes)
    c_outer, c_inner = sch.split(c, [None, chunk])
    sch.reorder(b, c_outer, h_loop, w_loop, c_inner)
    sch.parallel(sch.fuse(b, c_outer))
    out_block = sch.get_sblock("global_avg_pool")
    sch.reverse_compute_at(out_block, sch.get_loops(sum_block)[0])
    sch.set_scope(sum_block, 0, ACCUMULATOR_SCOPE)
    sch.vectorize(c_inner)
    init = sch.decompose_reduction(sum_block, h_loop)
    # Both stages sit under the (batch x channel vector) task.
    unroll_then_vectorize_below(sch, init, 1)
    unroll_then_vectorize_below(sch, out_block, 1)
    return sch.mod["main"]


def adaptive_windows(extent: int, out_extent: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows along one axis: output i reads [floor(i*E/O), ceil((i+1)*E/O))."""
    return [(i * extent // out_extent, -(-(i + 1) * extent // out_extent)) for i in range(out_extent)]


def adaptive_avg_pool2d_primfunc(shape_nhwc: tuple[int, int, int, int], out_hw: tuple[int, int], lanes: int):
    """(B, H, W, C) -> (B, OH, OW, C), each output the mean of its adaptive window (windows of
    unequal size, overlapping or repeated when OH > H, as torch's adaptive_avg_pool2d).

    For output sizes that do not divide the input (the uniform case is an ordinary average pool):
    the window loop runs to the largest window and reads under a condition, the divisor is the
    window's own size.
    """
    batch, height, width, channels = shape_nhwc
    out_height, out_width = out_hw
    rows, cols = adaptive_windows(height, out_height), adaptive_windows(width, out_width)
    max_rows = max(end - start for start, end in rows)
    max_cols = max(end - start for start, end in cols)
    x = te.placeholder(shape_nhwc, DTYPE, name="x")
    s = te.reduce_axis((0, max_rows), name="s")
    t = te.reduce_axis((0, max_cols), name="t")
    zero = tirx.const(0.0, DTYPE)

    def first(i, extent, out_extent):
        return tirx.floordiv(i * extent, out_extent)

    def last(i, extent, out_extent):  # exclusive
        return tirx.floordiv((i + 1) * extent + out_extent - 1, out_extent)

    def read(b, oh, ow, c):
        h, w = first(oh, height, out_height) + s, first(ow, width, out_width) + t
        inside = tirx.all(h < last(oh, height, out_height), w < last(ow, width, out_width))
        return te.sum(
            tirx.if_then_else(inside, x[b, tirx.min(h, height - 1), tirx.min(w, width - 1), c], zero), axis=[s, t]
        )

    out_shape = (batch, out_height, out_width, channels)
    summed = te.compute(out_shape, read, name="sum_window")

    def mean(b, oh, ow, c):
        count = (last(oh, height, out_height) - first(oh, height, out_height)) * (
            last(ow, width, out_width) - first(ow, width, out_width)
        )
        return summed[b, oh, ow, c] / count.astype(DTYPE)

    out = te.compute(out_shape, mean, name="adaptive_avg_pool")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    _schedule_window(sch, "sum_window", "adaptive_avg_pool", channels, lanes)
    return sch.mod["main"]
