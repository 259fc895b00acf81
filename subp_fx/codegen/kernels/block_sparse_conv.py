"""A TE/TIR generator for the uniform 1xN block-sparse conv2d, NHWC, with a fused epilogue.

What it computes, for output channel ``co = r*N + j`` (block-row r, lane j)::

    conv[b, oh, ow, co] = sum_{k < K, s < kh, t < kw}
        x[b, oh*sh + s - ph, ow*sw + t - pw, indices[r, k]] * values[r, k, s, t, j]
    out[b, oh, ow, co]  = act(conv + bias[co] + residual[b, oh, ow, co])

(x is zero outside the input). The weights are buffer *arguments*, not constants: the
whole-model lowering passes them as constants of a Relax ``call_tir`` and Relax binds them, so
one compiled kernel serves any weights of the same shape. Only K (kept channels per block-row)
is static: it is the reduction's loop bound.

The schedule (why each step; numbers in the package report and ``tiling``'s docstring):

- parallel, by default, over fused (batch, block-row, output-row tile): B*R*OH/rows tasks
  balance well on few cores, and a thread's contiguous run of tasks reuses one block-row's
  weights (K*kh*kw*N floats) across all its output rows while the input streams past R times.
  Layers whose input is large next to their weights (the 56x56 1x1 layers) instead run
  parallel over (batch, output-row tile), each task computing every block-row of its tiles
  (``ConvTile.parallel == "pixels"``): the input is read once. ``tiling.preferred_parallel``
  picks the mode that streams fewer bytes, unless "pixels" would read weights that do not stay
  in the L2 again for every task while the input would;
- the output is cut into register tiles of ``rows x cols`` pixels x N lanes; the loop order inside
  a tile is (k, s, t, tile row, tile col, lane): the partial sums stay in vector registers for the
  whole reduction (the conv buffer is compute-at the tile and small), each weight vector is
  loaded once per (k, s, t) and reused by every pixel of the tile;
- s, t and the tile are unrolled, the N lanes vectorised (N/lanes vector registers per pixel);
- ``decompose_reduction`` puts the zero-init outside the reduction loop; the epilogue (bias,
  residual, activation) is compute-at the tile too and runs on the registers before the single
  write-back, vectorised over the lanes;
- padding is read under a bounds condition in the hot loop ("inline", no copy) or, as a
  schedule option, copied once into a zero-padded buffer inside the same kernel ("stage");
- the input may also be read from a copy made inside the kernel whose pixels are
  ``tile.pixel_pad`` floats longer (TIR's ``storage_align`` on the copy's pixel axis; zero-padded
  or plain, as the padding mode says): deep NHWC layers put a tile's pixels a multiple of 1 KiB
  apart, in one L1 set, and the tile's window then evicts its own lines at every reduction step
  (Zen 4, 2 threads, ResNet-50 shapes at 66/128 kept: 1x1 1024->256 at 14x14 390 -> 242 us,
  3x3/2 512->512 at 14x14 1384 -> 535 us; ``tiling.spared_l1``);
- output extents that the tile does not divide are padded: the extra pixels are computed into
  the local buffer and never written back;
- the reduction loop carries ``tir_passes.weight_prefetch``'s annotation: after lowering, each
  step also prefetches the weight lines the next block-row will read at the same step (in a
  model the deep layers' weights arrive from DRAM: 1x1 2048->512 at 7x7 293 -> 242 us, Zen 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, te, tirx

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.isa import VectorISA, vector_chunk
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE, DTYPE, bounds_condition
from subp_fx.codegen.kernels.modes import PARALLEL_PIXELS
from subp_fx.codegen.kernels.spec import (
    INDEX_DTYPE,
    BlockSparseConvSpec,
    ConvGeometry,
    ConvTile,
    computed_output_extent,
    copies_input,
    padded_input_extent,
    zero_pads_a_copy,
)
from subp_fx.codegen.kernels.tiling import unrolls_outer_loop
from subp_fx.codegen.tir_passes.weight_prefetch import PREFETCH_AHEAD, prefetch_plan

# Layers computing at most this many output pixels prefetch the next block-row's weights
# (tir_passes.weight_prefetch). A block-row's weights serve every output pixel, so on a large
# output a cold line's wait is shared by many tiles while the prefetches still take load slots:
# in ResNet-50 at 66/128 (Zen 4, 2 threads, in the model) the 7x7 and 14x14 layers gained 39-130
# us each, the 28x28 ones nothing, the 112x112 stem and one 56x56 layer lost 35 and 26 us.
PREFETCH_MAX_PIXELS = 28 * 28


def prefetches_weights(spec: ConvGeometry) -> bool:
    """Whether the kernel prefetches the next block-row's weights (:data:`PREFETCH_MAX_PIXELS`)."""
    return spec.batch * spec.out_height * spec.out_width <= PREFETCH_MAX_PIXELS


def weight_prefetch_annotations(spec: ConvGeometry, buffer: str, distance: int) -> dict:
    """A reduction loop's annotations: ``buffer``'s next block-row (``distance`` elements on)
    prefetched as the loop reads this one's, where :func:`prefetches_weights`; none elsewhere.
    Every block-sparse kernel (fp32, int8, bf16, grouped) takes its from here."""
    return {PREFETCH_AHEAD: prefetch_plan(buffer, distance)} if prefetches_weights(spec) else {}


def _bounds_condition(spec: BlockSparseConvSpec, padded_height: int, padded_width: int):
    """The condition under which padded coordinates (h, w) fall inside the input, or None.

    Only the clauses that can fail are emitted, so a 1x1 unpadded conv whose tile divides the
    output has no condition at all.
    """
    pad_h, pad_w = spec.padding
    bottom, right = spec.height + pad_h, spec.width + pad_w

    def condition(h, w):
        return bounds_condition(
            h,
            w,
            pad_h if pad_h > 0 else None,
            pad_w if pad_w > 0 else None,
            bottom if padded_height > bottom else None,
            right if padded_width > right else None,
        )

    return condition


@dataclass(frozen=True)
class _Stages:
    arguments: list[te.Tensor]
    has_pad_stage: bool


def _compute(spec: BlockSparseConvSpec, tile: ConvTile) -> _Stages:
    N, K = spec.block_size, spec.kept_per_row
    kh, kw = spec.kernel_size
    stride_h, stride_w = spec.stride
    pad_h, pad_w = spec.padding
    computed_height, computed_width = computed_output_extent(spec, tile)
    padded_height, padded_width = padded_input_extent(spec, tile)

    data = te.placeholder(spec.data_shape, DTYPE, name="data")
    values = te.placeholder(spec.values_shape, DTYPE, name="values")
    indices = te.placeholder(spec.indices_shape, INDEX_DTYPE, name="indices")
    zero = tirx.const(0.0, DTYPE)
    inside = _bounds_condition(spec, padded_height, padded_width)

    def guarded(source):
        def read(b, h, w, c):
            condition = inside(h, w)
            value = source[b, h - pad_h, w - pad_w, c]
            return value if condition is None else te.if_then_else(condition, value, zero)

        return read

    # The copy stage is called "pad" either way: zero-padded ("stage"), or a plain copy whose
    # pixels the schedule lengthens, read under the bounds condition like the input itself.
    has_pad_stage = copies_input(spec, tile)
    if zero_pads_a_copy(spec, tile):
        padded = te.compute((spec.batch, padded_height, padded_width, spec.in_channels), guarded(data), name="pad")

        def read(b, h, w, c):
            return padded[b, h, w, c]

    elif has_pad_stage:
        read = guarded(te.compute(spec.data_shape, lambda b, h, w, c: data[b, h, w, c], name="pad"))
    else:
        read = guarded(data)

    kept = te.reduce_axis((0, K), name="k")
    kernel_row = te.reduce_axis((0, kh), name="s")
    kernel_col = te.reduce_axis((0, kw), name="t")
    conv = te.compute(
        (spec.batch, computed_height, computed_width, spec.out_channels),
        lambda b, oh, ow, co: te.sum(
            read(b, oh * stride_h + kernel_row, ow * stride_w + kernel_col, indices[co // N, kept])
            * values[co // N, kept, kernel_row, kernel_col, co % N],
            axis=[kept, kernel_row, kernel_col],
        ),
        name="conv",
    )

    arguments = [data, values, indices]
    bias = residual = None
    if spec.bias:
        bias = te.placeholder((spec.out_channels,), DTYPE, name="bias")
        arguments.append(bias)
    if spec.residual:
        residual = te.placeholder(spec.out_shape, DTYPE, name="residual")
        arguments.append(residual)
    activation = activations.expression(spec.activation)

    def epilogue(b, oh, ow, co):
        value = conv[b, oh, ow, co]
        value = value + bias[co] if bias is not None else value
        value = value + residual[b, oh, ow, co] if residual is not None else value
        return activation(value)

    out = te.compute(spec.out_shape, epilogue, name="out")
    return _Stages(arguments + [out], has_pad_stage)


def vectorize_block_lanes(sch: s_tir.Schedule, loop, N: int, isa: VectorISA) -> None:
    """Vectorise a loop over the N lanes of a block: whole when it fits a register, else in chunks
    (the Winograd kernel's GEMM takes it too)."""
    chunk = vector_chunk(N, isa)
    if chunk == N:
        sch.vectorize(loop)
        return
    outer, inner = sch.split(loop, [None, chunk])
    sch.unroll(outer)
    sch.vectorize(inner)


def _schedule_pad_stage(sch: s_tir.Schedule, spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> None:
    stage = sch.get_sblock("pad")
    if tile.pixel_pad:
        # The staged buffer's pixel stride (its axis 2) becomes the least multiple of
        # C + pixel_pad that is >= C, i.e. C + pixel_pad itself.
        sch.storage_align(stage, 0, 2, spec.in_channels + tile.pixel_pad, 0)
    batch, row, col, channel = sch.get_loops(stage)
    sch.parallel(sch.fuse(batch, row))
    chunk = math.gcd(spec.in_channels, isa.lanes)
    if chunk > 1:
        _, lanes = sch.split(channel, [None, chunk])
        sch.vectorize(lanes)


def _loops_inside(sch: s_tir.Schedule, block, anchor) -> list:
    """The loops of ``block`` nested inside the loop ``anchor``."""
    anchor_loop = sch.get(anchor)
    loops = sch.get_loops(block)
    for index, loop in enumerate(loops):
        if sch.get(loop).same_as(anchor_loop):
            return list(loops[index + 1 :])
    raise KernelSpecError("internal: the tile is not nested in the parallel loop")


def _schedule(
    sch: s_tir.Schedule, spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA, has_pad_stage: bool
) -> None:
    N = spec.block_size
    conv = sch.get_sblock("conv")
    batch, out_row, out_col, channel, kept, kernel_row, kernel_col = sch.get_loops(conv)
    row_tile, tile_row = sch.split(out_row, [None, tile.rows])
    col_tile, tile_col = sch.split(out_col, [None, tile.cols])
    block_row, lane = sch.split(channel, [None, N])
    reduction_and_tile = (kept, kernel_row, kernel_col, tile_row, tile_col, lane)
    if tile.parallel == PARALLEL_PIXELS:
        sch.reorder(batch, row_tile, col_tile, block_row, *reduction_and_tile)
        parallel_loop = sch.fuse(batch, row_tile)
        write_back_at = block_row
    else:
        sch.reorder(batch, block_row, row_tile, col_tile, *reduction_and_tile)
        parallel_loop = sch.fuse(batch, block_row, row_tile)
        write_back_at = col_tile
    sch.parallel(parallel_loop)

    out = sch.get_sblock("out")
    sch.reverse_compute_at(out, write_back_at)
    sch.set_scope(conv, 0, ACCUMULATOR_SCOPE)
    for loop in (kernel_row, kernel_col, tile_row, tile_col):
        sch.unroll(loop)
    vectorize_block_lanes(sch, lane, N, isa)

    kh, kw = spec.kernel_size
    for key, value in weight_prefetch_annotations(spec, "values", spec.kept_per_row * kh * kw * N).items():
        sch.annotate(kept, key, value)
    init = sch.decompose_reduction(conv, kept)
    unroll_outer = unrolls_outer_loop(spec, tile, isa)
    for tile_block in (init, out):
        # The innermost (row, col, lane) loops; TIR drops unit-extent loops, so for a one-row tile
        # this reaches the loop outside the tile (unrolling it keeps the accumulators in registers:
        # measured in the asm), but it must never reach the parallel loop (a one-pixel tile). That
        # outer loop is unrolled only within tiling.MAX_UNROLLED_OUTER_FMAS (its code grows with
        # the image width: see there).
        *pixel_loops, lane_loop = _loops_inside(sch, tile_block, parallel_loop)[-3:]
        inside_tile = tile.pixels
        for loop in reversed(pixel_loops):
            extent = int(sch.get(loop).extent)
            if extent <= inside_tile:
                inside_tile //= extent
            elif not unroll_outer:
                break
            sch.unroll(loop)
        vectorize_block_lanes(sch, lane_loop, N, isa)

    if has_pad_stage:
        _schedule_pad_stage(sch, spec, tile, isa)


def block_sparse_conv2d_primfunc(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> tirx.PrimFunc:
    """The scheduled kernel as a PrimFunc with buffer arguments ``spec.argument_names()``.

    Ready for ``tvm.compile`` or for a Relax ``call_tir`` (the output is the last argument).
    """
    if not isinstance(tile, ConvTile):
        raise KernelSpecError(f"tile must be a ConvTile, got {tile!r}")
    stages = _compute(spec, tile)
    func = te.create_prim_func(stages.arguments)
    sch = s_tir.Schedule(func)
    _schedule(sch, spec, tile, isa, stages.has_pad_stage)
    return sch.mod["main"]
