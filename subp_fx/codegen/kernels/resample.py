"""Kernels that move pixels without arithmetic, over NHWC: constant padding of H/W and nearest
upsampling by integer factors.

Both are one TE compute over the output, scheduled parallel over (batch, output row) and
vectorised over a chunk of channels: every output pixel is a contiguous vector copy of one input
pixel (or of the pad value), so the channel loop is the one that vectorises, whatever H and W.
The pad kernel reads under a bounds condition that depends on the pixel only (one compare per
pixel, not per channel) and emits only the clauses that can fail.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from subp_fx.codegen.kernels.loops import DTYPE, bounds_condition, lane_chunk


def _schedule_rows_parallel_channels_vector(sch: s_tir.Schedule, block_name: str, channels: int, lanes: int) -> None:
    block = sch.get_sblock(block_name)
    b, h, w, c = sch.get_loops(block)
    chunk = lane_chunk(channels, lanes)
    _, c_inner = sch.split(c, [None, chunk])
    sch.parallel(sch.fuse(b, h))
    if chunk > 1:
        sch.vectorize(c_inner)


def constant_pad_primfunc(
    shape: tuple[int, int, int, int], pads: tuple[int, int, int, int], lanes: int, value: float = 0.0
) -> tirx.PrimFunc:
    """out = ``x`` (B, H, W, C) padded by ``pads`` = (top, bottom, left, right) >= 0 rows and
    columns of ``value``: torch's ``F.pad(x_nchw, [left, right, top, bottom], value=value)``."""
    if any(pad < 0 for pad in pads):
        raise ValueError(f"pads {pads} must be >= 0 (a negative pad crops; not a pad kernel)")
    batch, height, width, channels = shape
    top, bottom, left, right = pads
    out_shape = (batch, height + top + bottom, width + left + right, channels)
    x = te.placeholder(shape, DTYPE, name="x")

    def compute(b, oh, ow, c):
        h, w = oh - top, ow - left
        inside = bounds_condition(
            h, w, 0 if top else None, 0 if left else None, height if bottom else None, width if right else None
        )
        if inside is None:
            return x[b, h, w, c]
        return tirx.if_then_else(inside, x[b, h, w, c], tirx.const(value, DTYPE))

    out = te.compute(out_shape, compute, name="pad")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    _schedule_rows_parallel_channels_vector(sch, "pad", channels, lanes)
    return sch.mod["main"]


def upsample_nearest_primfunc(shape: tuple[int, int, int, int], scale: tuple[int, int], lanes: int) -> tirx.PrimFunc:
    """out[b, h, w, c] = x[b, h // sh, w // sw, c] for ``x`` (B, H, W, C) and integer ``scale``
    (sh, sw) >= 1: torch's nearest (and nearest-exact) upsampling when the output is exactly
    ``scale`` times the input."""
    if any(not isinstance(s, int) or s < 1 for s in scale):
        raise ValueError(f"scale {scale} must be integers >= 1")
    batch, height, width, channels = shape
    out_shape = (batch, height * scale[0], width * scale[1], channels)
    x = te.placeholder(shape, DTYPE, name="x")
    out = te.compute(
        out_shape, lambda b, h, w, c: x[b, tirx.floordiv(h, scale[0]), tirx.floordiv(w, scale[1]), c], name="upsample"
    )
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    _schedule_rows_parallel_channels_vector(sch, "upsample", channels, lanes)
    return sch.mod["main"]
