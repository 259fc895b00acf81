"""Depthwise conv2d (groups == C_in == C_out), NHWC, with bias and activation fused.

What it computes::

    conv[b, oh, ow, c] = sum_{s, t} x[b, oh*sh - ph + s*dh, ow*sw - pw + t*dw, c] * weight[s, t, c]
    out[b, oh, ow, c]  = act(conv + bias[c])

(x is zero outside the input; ``weight`` is torch's (C, 1, kh, kw) weight laid out (kh, kw, C) so
that a vector of channels is one contiguous load). In a bf16 build x and out may be stored as bf16
(``in_dtype`` / ``out_dtype``): widened on load, rounded to nearest even on the store.

Schedule: parallel over (batch, output row); a register tile of ``tile_cols`` output pixels x
one vector of channels accumulates over the unrolled kernel taps (one weight-vector load per tap
serves every pixel of the tile); bias and activation are applied on the registers before the
single store. The output width is padded up to whole tiles; the extra pixels are computed into
the tile and never stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, te, tirx

from subp_fx.codegen import activations
from subp_fx.codegen.kernels.bf16_dot import rounded_bf16_bits, widened_bf16
from subp_fx.codegen.kernels.loops import (
    ACCUMULATOR_SCOPE,
    DTYPE,
    guarded_bounds,
    lane_chunk,
    unroll_then_vectorize_below,
)

MAX_TILE_COLS = 8  # accumulators + the weight vector + an input vector fit 16 ymm registers
STORAGE_DTYPES = ("float32", "bfloat16")
_BUFFER_DTYPES = {"float32": DTYPE, "bfloat16": "uint16"}  # a bf16 tensor is passed as its bits


@dataclass(frozen=True)
class DepthwiseConvSpec:
    """Static shape of one depthwise conv; pairs are (height, width)."""

    batch: int
    height: int
    width: int
    channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    activation: str = "none"
    # How the input and the output are stored: "float32", or "bfloat16" (uint16 bits) in a bf16
    # build, where the tensor is read only by bf16 convs and depthwise convs (lowering.bf16). The
    # arithmetic is float32 either way.
    in_dtype: str = "float32"
    out_dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("in_dtype", "out_dtype"):
            if getattr(self, name) not in STORAGE_DTYPES:
                raise ValueError(f"{name} must be one of {', '.join(STORAGE_DTYPES)}, got {getattr(self, name)!r}")

    @property
    def out_height(self) -> int:
        extent = self.dilation[0] * (self.kernel_size[0] - 1) + 1
        return (self.height + 2 * self.padding[0] - extent) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        extent = self.dilation[1] * (self.kernel_size[1] - 1) + 1
        return (self.width + 2 * self.padding[1] - extent) // self.stride[1] + 1

    @property
    def data_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.height, self.width, self.channels)

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (*self.kernel_size, self.channels)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_height, self.out_width, self.channels)

    @property
    def macs(self) -> int:
        return self.batch * self.out_height * self.out_width * self.channels * self.kernel_size[0] * self.kernel_size[1]


def depthwise_tile_cols(out_width: int) -> int:
    """Pixels per register tile, up to MAX_TILE_COLS.

    Per kernel tap a tile of ``cols`` pixels does ``cols`` FMAs, ``cols`` input loads and one
    weight load, so the loads per useful FMA are ``(1 + 1/cols)`` times the share of computed
    pixels that are real (the width is padded to whole tiles); the tile minimising that wins.
    """

    def cost(cols: int) -> tuple[float, int]:
        waste = math.ceil(out_width / cols) * cols / out_width
        return (round(waste * (1.0 + 1.0 / cols), 9), -cols)

    return min(range(1, min(MAX_TILE_COLS, out_width) + 1), key=cost)


def depthwise_conv2d_primfunc(spec: DepthwiseConvSpec, lanes: int) -> tirx.PrimFunc:
    """The scheduled kernel; buffer arguments (data, weight[, bias], out)."""
    kh, kw = spec.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = spec.stride, spec.padding, spec.dilation
    tile_cols = depthwise_tile_cols(spec.out_width)
    computed_width = math.ceil(spec.out_width / tile_cols) * tile_cols
    last_row = (spec.out_height - 1) * sh - ph + (kh - 1) * dh
    last_col = (computed_width - 1) * sw - pw + (kw - 1) * dw

    data = te.placeholder(spec.data_shape, _BUFFER_DTYPES[spec.in_dtype], name="data")
    weight = te.placeholder(spec.weight_shape, DTYPE, name="weight")
    zero = tirx.const(0.0, DTYPE)

    def read(b, h, w, c):
        condition = guarded_bounds(h, w, spec.height, spec.width, (ph, pw), (last_row, last_col))
        value = data[b, h, w, c] if spec.in_dtype == "float32" else widened_bf16(data[b, h, w, c])
        return tirx.if_then_else(condition, value, zero) if condition is not None else value

    s = te.reduce_axis((0, kh), name="s")
    t = te.reduce_axis((0, kw), name="t")
    conv = te.compute(
        (spec.batch, spec.out_height, computed_width, spec.channels),
        lambda b, oh, ow, c: te.sum(
            read(b, oh * sh - ph + s * dh, ow * sw - pw + t * dw, c) * weight[s, t, c], axis=[s, t]
        ),
        name="depthwise",
    )
    arguments = [data, weight]
    bias = None
    if spec.bias:
        bias = te.placeholder((spec.channels,), DTYPE, name="bias")
        arguments.append(bias)
    activate = activations.expression(spec.activation)

    def epilogue(b, oh, ow, c):
        value = conv[b, oh, ow, c]
        value = activate(value + bias[c] if bias is not None else value)
        return value if spec.out_dtype == "float32" else rounded_bf16_bits(value)

    out = te.compute(spec.out_shape, epilogue, name="out")
    sch = s_tir.Schedule(te.create_prim_func([*arguments, out]))
    schedule_depthwise(sch, spec, tile_cols, lanes)
    return sch.mod["main"]


def schedule_depthwise(sch: s_tir.Schedule, spec: DepthwiseConvSpec, tile_cols: int, lanes: int) -> None:
    """The schedule (module docstring) of a depthwise kernel whose blocks are "depthwise" (the
    reduction) and "out" (the epilogue); shared by the fp32 and int8 kernels."""
    conv = sch.get_sblock("depthwise")
    b, oh, ow, c, s, t = sch.get_loops(conv)
    chunk = lane_chunk(spec.channels, lanes)
    col_tile, tile_col = sch.split(ow, [None, tile_cols])
    channel_vector, lane = sch.split(c, [None, chunk])
    sch.reorder(b, oh, col_tile, channel_vector, s, t, tile_col, lane)
    sch.parallel(sch.fuse(b, oh))
    out = sch.get_sblock("out")
    sch.reverse_compute_at(out, channel_vector)
    sch.set_scope(conv, 0, ACCUMULATOR_SCOPE)
    for loop in (s, t, tile_col):
        sch.unroll(loop)
    sch.vectorize(lane)
    init = sch.decompose_reduction(conv, s)
    # Both stages sit under (batch x row, column tile, channel vector).
    unroll_then_vectorize_below(sch, init, 3)
    unroll_then_vectorize_below(sch, out, 3)
