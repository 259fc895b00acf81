"""Register tiles for the block-sparse conv kernel: which fit the CPU, and a default choice.

Why tiles matter: the kernel keeps a tile of ``rows x cols`` output pixels times N output
channels in vector registers while it walks the reduction (kept channel, kernel row, kernel
column). Each step loads N/lanes weight vectors and one broadcast input value per pixel, and does
``rows * cols * N/lanes`` FMAs. A bigger tile reuses each weight vector more, but once
accumulators + weight vectors + a broadcast exceed the register file, LLVM spills to the stack
and the kernel runs 2x slower (measured on AVX2: N=16 with 7 pixels spilled and ran at half
speed; 4 pixels was best). Tiles that do not divide the output are padded, and the padding is
wasted work. So the choice is per layer and per CPU: :func:`tile_candidates` lists the tiles that
fit, best first by a cost model, and the build layer times a few of them.
"""

from __future__ import annotations

import dataclasses
import math

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.cache import L1DataCache, window_lines_per_set
from subp_fx.codegen.kernels.isa import VectorISA, vectors_per_pixel
from subp_fx.codegen.kernels.modes import (
    PADDING_INLINE,
    PADDING_STAGE,
    PARALLEL_BLOCK_ROWS,
    PARALLEL_MODES,
    PARALLEL_PIXELS,
)
from subp_fx.codegen.kernels.spec import (
    BlockSparseConvSpec,
    ConvTile,
    computed_output_extent,
    padded_input_extent,
    zero_pads_a_copy,
)

# Two-row tiles share input rows between their rows (row 0's kernel row 1 reads what row 1's
# kernel row 0 reads); LLVM keeps those loads live and spills far earlier than the count of
# accumulators suggests, so they are timing candidates only, never the heuristic's choice.
MAX_TILE_ROWS = 2


def output_waste(spec: BlockSparseConvSpec, tile: ConvTile) -> float:
    """Computed pixels per real output pixel (>= 1: the output is padded to whole tiles)."""
    computed_height, computed_width = computed_output_extent(spec, tile)
    return computed_height * computed_width / (spec.out_height * spec.out_width)


def tile_cost(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> float:
    """Relative time per useful FMA: padded work times memory operations per FMA.

    Per reduction step the tile does ``pixels * V`` FMAs (V vectors per pixel) and loads V weight
    vectors plus one broadcast per pixel, so there are ``1/pixels + 1/V`` loads per FMA; that is
    scaled by the share of computed pixels that are real.
    """
    vectors = vectors_per_pixel(spec.block_size, isa)
    return output_waste(spec, tile) * (1.0 / vectors + 1.0 / tile.pixels)


def fits_registers(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> bool:
    """Whether the tile's accumulators stay within ``isa.max_accumulators``."""
    return tile.accumulators(spec.block_size, isa) <= isa.max_accumulators


def _input_extent_read(extent: int, out_extent: int, kernel: int, stride: int) -> int:
    """Input rows (or columns) a conv reads: all of them unless the stride skips some."""
    return min(extent, out_extent * kernel) if stride > kernel else min(extent, (out_extent - 1) * stride + kernel)


def reread_bytes(spec: BlockSparseConvSpec, parallel: str) -> int:
    """The bytes a parallel mode reads again for every block-row ("block_rows": the input the
    conv touches) or every task ("pixels": all the weights)."""
    kh, kw = spec.kernel_size
    if parallel == PARALLEL_PIXELS:
        return 4 * spec.out_channels * spec.kept_per_row * kh * kw
    rows_read = _input_extent_read(spec.height, spec.out_height, kh, spec.stride[0])
    cols_read = _input_extent_read(spec.width, spec.out_width, kw, spec.stride[1])
    return 4 * spec.batch * rows_read * cols_read * spec.in_channels


def streamed_bytes(spec: BlockSparseConvSpec, parallel: str, tile_rows: int = 1) -> int:
    """Bytes a parallel mode streams through the caches, the one that lives there being read once.

    "block_rows" reads the input the conv touches once per block-row (a stride-2 1x1 conv
    touches a quarter of it: every channel of every other pixel); "pixels" reads all the weights
    once per task (per tile row of the output). Measured on the ResNet-18 layers: the mode that
    streams fewer bytes was the faster one, by 1.5-1.8x on the 56x56 1x1 layers ("pixels") and
    the 7x7 layer ("block_rows"), within noise on the others; on ResNet-50's 1024->2048 1x1/2
    layer at 7x7, counting only the pixels read turned the choice to "block_rows": 0.38 ms
    against 0.66 ms.
    """
    tasks = spec.batch * math.ceil(spec.out_height / tile_rows)
    repeats = spec.block_rows if parallel == PARALLEL_BLOCK_ROWS else tasks
    return repeats * reread_bytes(spec, parallel)


# The kernel of a one-row tile also unrolls the loop just outside the tile (the column tiles, or
# the block-rows in "pixels" mode): with the column tiles unrolled, the inline padding's bounds
# checks become compile-time constants. But that code grows with the output width: ResNet-18's
# 7x7 stem at 224 px (28 column tiles x 49 taps x 4 pixels x 2 vectors) took 92 s in LLVM and
# made up most of the model's build. So it is unrolled only while the unrolled loop holds at most
# this many FMAs (per kept input channel); above it, that stem builds in 0.7 s and, with the
# input staged into a zero-padded copy instead (no bounds checks at all), runs 1.48 ms against
# 1.86 ms (Ice Lake server, 2 threads, heuristic tile widened to 7 columns by the cost model).
MAX_UNROLLED_OUTER_FMAS = 2048


def outer_unroll_extent(spec: BlockSparseConvSpec, tile: ConvTile) -> int | None:
    """Iterations of the loop just outside a one-row tile that the kernel may unroll: the
    column tiles ("block_rows" mode) or the block-rows ("pixels" mode); None for taller tiles."""
    if tile.rows > 1 or spec.out_height <= 1:
        return None
    if tile.parallel == PARALLEL_PIXELS:
        return spec.block_rows
    return math.ceil(spec.out_width / tile.cols)


def unrolls_outer_loop(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> bool:
    """Whether the kernel unrolls :func:`outer_unroll_extent`'s loop (within MAX_UNROLLED_OUTER_FMAS)."""
    extent = outer_unroll_extent(spec, tile)
    if extent is None:
        return False
    kh, kw = spec.kernel_size
    fmas = extent * kh * kw * tile.pixels * vectors_per_pixel(spec.block_size, isa)
    return fmas <= MAX_UNROLLED_OUTER_FMAS


def heuristic_padding(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> str:
    """ "stage" for a padded conv whose column tiles stay a loop (bounds checks would run in the hot
    loop), else "inline" (no copy)."""
    padded = any(spec.padding)
    if padded and tile.parallel == PARALLEL_BLOCK_ROWS and not unrolls_outer_loop(spec, tile, isa):
        return PADDING_STAGE
    return PADDING_INLINE


def preferred_parallel(spec: BlockSparseConvSpec, l2: int | None = None) -> str:
    """The mode that streams fewer bytes through the caches (:func:`streamed_bytes`), except
    that, given a core's ``l2`` bytes, "pixels" gives way to "block_rows" where the weights
    "pixels" reads again for every task do not stay in the L2 and the input "block_rows" reads
    again does (stays: takes at most half of it, the rest for what passes through).

    Why: ResNet-50's 2048->512 1x1 convs at 7x7 and 23% kept stream 967 KB of weights (more
    than half of Zen 4's 1 MB L2) once per pixel row in "pixels" mode, fewer bytes in all than
    "block_rows" re-reading the 401 KB input for each of 32 block-rows, but from beyond the L2;
    in the model, weights arriving from DRAM, "pixels" took 172-193 us and "block_rows" 141-146
    (Zen 4, 2 threads, before the weight prefetch; 1024->2048 1x1/2 at 14x14 410-420 -> 305-308
    us; at 66/128 kept, 512->1024 1x1/2 at 28x28 544-547 -> 525-528 us), the whole model
    (ResNet-50 98.5/128 pruned, three profiles) 11.33-11.52 -> 10.93-11.19 ms. The converse
    (input beyond the L2, weights in it) was measured and not adopted: ResNet-18's 3x3 64->64
    at 56x56 (802 KB of input, 78 KB of weights) took 570-600 us in "pixels" mode against
    540-564 in "block_rows", its stem the same."""
    streamed = min(PARALLEL_MODES, key=lambda parallel: streamed_bytes(spec, parallel))
    if l2 is None or streamed != PARALLEL_PIXELS:
        return streamed
    weights_stay = reread_bytes(spec, PARALLEL_PIXELS) <= l2 // 2
    input_stays = reread_bytes(spec, PARALLEL_BLOCK_ROWS) <= l2 // 2
    return PARALLEL_BLOCK_ROWS if input_stays and not weights_stay else PARALLEL_PIXELS


def tile_candidates(
    spec: BlockSparseConvSpec,
    isa: VectorISA,
    padding: str = PADDING_INLINE,
    parallel: str | None = None,
    l2: int | None = None,
) -> list[ConvTile]:
    """Every tile that fits ``isa``'s registers, cheapest first by :func:`tile_cost`.

    ``parallel`` defaults to :func:`preferred_parallel` (for a core's ``l2`` bytes, if given).
    Ties go to the tile with less output padding, then to one-row, then to wider tiles. A tile
    never exceeds the output (a 7-wide output gets no 8-wide tile).
    """
    parallel = preferred_parallel(spec, l2) if parallel is None else parallel
    tiles = [
        ConvTile(rows, cols, padding, parallel)
        for rows in range(1, min(MAX_TILE_ROWS, spec.out_height) + 1)
        for cols in range(1, spec.out_width + 1)
    ]
    fitting = [tile for tile in tiles if fits_registers(spec, tile, isa)] or [ConvTile(1, 1, padding, parallel)]
    return sorted(
        fitting,
        key=lambda tile: (
            round(tile_cost(spec, tile, isa), 6),
            round(output_waste(spec, tile), 6),
            tile.rows,
            -tile.cols,
        ),
    )


# Kernels wider than this get VectorISA.wide_kernel_accumulators.
WIDEST_NARROW_KERNEL = 3


def preferred_accumulators(spec: BlockSparseConvSpec, isa: VectorISA) -> int:
    """The most accumulators the heuristic gives this layer's tile (see :class:`VectorISA`)."""
    if spec.kernel_size[1] > WIDEST_NARROW_KERNEL:
        return min(isa.preferred_accumulators, isa.wide_kernel_accumulators)
    return isa.preferred_accumulators


def input_lines_per_set(spec: BlockSparseConvSpec, tile: ConvTile, cache: L1DataCache) -> int:
    """The most L1 lines of one set the tile's input window takes for one input channel (float32
    NHWC; see :mod:`cache`): ``(rows-1)*sh + kh`` input rows of ``(cols-1)*sw + kw`` pixels. In a
    zero-padded copy (:func:`~subp_fx.codegen.kernels.spec.zero_pads_a_copy`) padding included
    and each row as wide as the copy; otherwise no more than the input has (padding is not
    read). Pixels are ``tile.pixel_pad`` floats longer than their channels."""
    (kh, kw), (sh, sw) = spec.kernel_size, spec.stride
    window_rows, window_cols = (tile.rows - 1) * sh + kh, (tile.cols - 1) * sw + kw
    if zero_pads_a_copy(spec, tile):
        _, row_pixels = padded_input_extent(spec, tile)
    else:
        row_pixels = spec.width
        window_rows, window_cols = min(window_rows, spec.height), min(window_cols, spec.width)
    pixel_bytes = 4 * (spec.in_channels + tile.pixel_pad)
    return window_lines_per_set(
        window_rows=window_rows,
        window_cols=window_cols,
        row_bytes=row_pixels * pixel_bytes,
        pixel_bytes=pixel_bytes,
        cache=cache,
    )


def spared_l1(spec: BlockSparseConvSpec, tile: ConvTile, cache: L1DataCache) -> ConvTile | None:
    """``tile`` reading a copy of its input whose pixels are one cache line longer, when the
    tile's window crowds one L1 set (more lines than ``cache.lines_per_set_limit``) and the copy's
    window does not; None otherwise. The padding mode stays: an "inline" tile reads the copy
    under its bounds condition, skipping the taps that fall on padding as before (a zero-padded
    copy computes them: 3x3/2 512->512 at 14x14, 535 us inline against 572 staged).

    Why crowding costs: the window's lines of one channel are read at every reduction step and
    reused by the next kept channel in the same line, and an LRU set cycling through more lines
    than it has ways keeps none of them. Measured (Zen 4, 8 ways, 2 threads, 66/128 kept, the
    heuristic's tile in place -> from the copy): 1x1 1024->256 at 14x14, 1 x 14 (14 lines a set)
    390 -> 242 us; 1x1/2 512->1024 at 28x28 768 -> 478 us; 3x3/2 512->512 at 14x14, 1 x 7 (21)
    1384 -> 535 us; 3x3/2 256->256 at 28x28, 1 x 14 (21) 1054 -> 561 us. Below the limit the copy
    gains nothing (:data:`cache.OVERFLOW`)."""
    if input_lines_per_set(spec, tile, cache) <= cache.lines_per_set_limit:
        return None
    padded = dataclasses.replace(tile, pixel_pad=cache.line // 4)
    return padded if input_lines_per_set(spec, padded, cache) <= cache.lines_per_set_limit else None


def heuristic_tile(
    spec: BlockSparseConvSpec, isa: VectorISA, cache: L1DataCache | None = None, l2: int | None = None
) -> ConvTile:
    """The cost model's best one-row tile within :func:`preferred_accumulators`, in the
    :func:`preferred_parallel` mode (for a core's ``l2`` bytes, if given), padding as
    :func:`heuristic_padding` says: the no-timing default.

    With the target's L1 ``cache``, a tile whose input window crowds one cache set reads a copy
    of the input with longer pixels instead (:func:`spared_l1`), when that copy's window does not
    crowd; the tile's shape and padding mode stay. (Before the staged copy the heuristic shrank
    such tiles, which recovers less: ResNet-50's layer4.0.conv2 on Zen 4, 2 threads, 1 x 7 tile
    1400 us, 1 x 4 777 us, 1 x 7 from a copy with longer pixels 535 us.)"""
    cap = preferred_accumulators(spec, isa)
    preferred = [
        tile
        for tile in tile_candidates(spec, isa, l2=l2)
        if tile.rows == 1 and tile.accumulators(spec.block_size, isa) <= cap
    ]
    tile = preferred[0] if preferred else ConvTile(1, 1, PADDING_INLINE, preferred_parallel(spec, l2))
    tile = dataclasses.replace(tile, padding=heuristic_padding(spec, tile, isa))
    staged = spared_l1(spec, tile, cache) if cache is not None else None
    return tile if staged is None else staged


def cheapest_block_size(
    spec: BlockSparseConvSpec,
    block_sizes: tuple[int, ...],
    isa: VectorISA,
    cache: L1DataCache | None = None,
    l2: int | None = None,
) -> int:
    """Of ``block_sizes`` that divide ``spec.out_channels``, the N whose heuristic tile (for the
    L1 ``cache``, if given) has the lowest :func:`tile_cost` for ``spec`` at that N (ties: the
    earlier in ``block_sizes``). For layers whose N is free, i.e. dense ones."""
    candidates = [size for size in block_sizes if spec.out_channels % size == 0]
    if not candidates:
        raise KernelSpecError(f"none of the block sizes {block_sizes} divides out_channels={spec.out_channels}")

    def cost(block_size: int) -> float:
        at_size = dataclasses.replace(spec, block_size=block_size)
        return tile_cost(at_size, heuristic_tile(at_size, isa, cache, l2), isa)

    return min(candidates, key=cost)
