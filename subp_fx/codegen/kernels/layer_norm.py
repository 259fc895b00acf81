"""LayerNorm over the last (contiguous) axis: ``out = (x - mean) / sqrt(var + eps) * weight + bias``.

The input is seen as (rows, C), C the normalised axis stored last (ConvNeXt's channels, whose
permutes the lowering keeps free, so a row is one pixel's channels). Two passes, in float32 as
torch computes: the mean, then the variance as the mean of (x - mean)^2 (not E[x^2] - mean^2,
which cancels badly when |mean| >> std).

Schedule: parallel over rows; per row, each pass sums C in a vector of ``chunk`` partial sums
(chunk = the widest vector width dividing C, so a load never straddles rows), the lanes are then
added, and the normalising write runs over C in vectors.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from subp_fx.codegen.kernels.loops import DTYPE, lane_chunk


def layer_norm_primfunc(rows: int, channels: int, eps: float, weight: bool, bias: bool, lanes: int) -> tirx.PrimFunc:
    """Buffer arguments: ``x`` (rows, C), [``weight`` (C,)], [``bias`` (C,)], ``out`` (rows, C)."""
    chunk = lane_chunk(channels, lanes)
    x = te.placeholder((rows, channels), DTYPE, name="x")
    g = te.reduce_axis((0, channels // chunk), name="g")
    partial_sum = te.compute((rows, chunk), lambda r, lane: te.sum(x[r, g * chunk + lane], axis=g), name="partial_sum")
    lane_axis = te.reduce_axis((0, chunk), name="lane_axis")
    inverse = tirx.const(1.0 / channels, DTYPE)
    # Reductions must be a compute's top level: the sums are scaled where they are read.
    total = te.compute((rows,), lambda r: te.sum(partial_sum[r, lane_axis], axis=lane_axis), name="total")
    g2 = te.reduce_axis((0, channels // chunk), name="g2")

    def squared_deviation(r, lane):
        deviation = x[r, g2 * chunk + lane] - total[r] * inverse
        return te.sum(deviation * deviation, axis=g2)

    partial_square = te.compute((rows, chunk), squared_deviation, name="partial_square")
    lane_axis2 = te.reduce_axis((0, chunk), name="lane_axis2")
    squares = te.compute((rows,), lambda r: te.sum(partial_square[r, lane_axis2], axis=lane_axis2), name="squares")
    arguments = [x]
    weight_buffer = te.placeholder((channels,), DTYPE, name="weight") if weight else None
    bias_buffer = te.placeholder((channels,), DTYPE, name="bias") if bias else None
    arguments += [buffer for buffer in (weight_buffer, bias_buffer) if buffer is not None]
    epsilon = tirx.const(eps, DTYPE)

    def normalise(r, c):
        value = (x[r, c] - total[r] * inverse) * (tirx.const(1.0, DTYPE) / tirx.sqrt(squares[r] * inverse + epsilon))
        value = value * weight_buffer[c] if weight_buffer is not None else value
        return value + bias_buffer[c] if bias_buffer is not None else value

    out = te.compute((rows, channels), normalise, name="layer_norm")
    sch = s_tir.Schedule(te.create_prim_func([*arguments, out]))
    row, c = sch.get_loops(sch.get_sblock("layer_norm"))
    sch.parallel(row)
    c_outer, c_inner = sch.split(c, [None, chunk])
    if chunk > 1:
        sch.vectorize(c_inner)
    for name in ("squares", "partial_square", "total", "partial_sum"):
        sch.compute_at(sch.get_sblock(name), row)
    for name in ("partial_sum", "partial_square"):
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)[1:]  # (lane, group), less any of extent 1 (compute_at drops them)
        if len(loops) == 2:
            lane, group = loops
            sch.reorder(group, lane)
            sch.vectorize(lane)
            init = sch.decompose_reduction(block, group)
            sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"]
