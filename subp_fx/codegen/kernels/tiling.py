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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tvm.target import Target
from tvm.target import codegen as llvm_codegen

from subp_fx.codegen.errors import KernelSpecError

if TYPE_CHECKING:
    from subp_fx.codegen.kernels.block_sparse_conv import BlockSparseConvSpec

PADDING_INLINE = "inline"
PADDING_STAGE = "stage"
PADDING_MODES = (PADDING_INLINE, PADDING_STAGE)

# What one parallel task computes. "block_rows": one block-row (N output channels) of one tile
# row of the output; a thread's run of tasks reuses that block-row's weights while the input
# streams past. "pixels": one tile row of the output for every block-row; the input tile stays in
# L1 while all the weights stream past. The first suits layers whose weights are large next to
# their input (deep 3x3 layers), the second layers with a large input and few block-rows (1x1
# layers at high resolution), which the first reads R times.
PARALLEL_BLOCK_ROWS = "block_rows"
PARALLEL_PIXELS = "pixels"
PARALLEL_MODES = (PARALLEL_BLOCK_ROWS, PARALLEL_PIXELS)

# Two-row tiles share input rows between their rows (row 0's kernel row 1 reads what row 1's
# kernel row 0 reads); LLVM keeps those loads live and spills far earlier than the count of
# accumulators suggests, so they are timing candidates only, never the heuristic's choice.
MAX_TILE_ROWS = 2


@dataclass(frozen=True)
class VectorISA:
    """The float32 SIMD unit the kernel is scheduled for.

    Both accumulator counts are measured, not derived. ``max_accumulators``: the most
    partial-sum registers a one-row tile holds before LLVM spills in the hot loop (read from the
    assembly, 3x3 kernels, inline padding); the weight vectors, the broadcasts LLVM keeps live
    across kernel taps and the bounds checks take the rest of the register file. AVX2 (16 ymm):
    N=16 x 5 pixels = 10 is clean, x 6 spills; N=32 x 2 = 8 clean, x 3 spills. AVX-512 (32 zmm):
    N=16 x 14 and N=32 x 7 = 14 clean, 16 not. ``preferred_accumulators``: the most the
    heuristic uses, where timing found larger tiles no faster: on znver3 (AVX2) N=16 x 4 pixels
    and N=32 x 2 pixels were fastest, i.e. 8 (the same AVX2 code on an Intel AVX-512 core ran
    10-20% faster with 5 pixels; the timed choice finds that, the heuristic stays with 8).
    ``wide_kernel_accumulators``: the heuristic's cap for kernels wider than 3 taps. Unrolled
    over a 7-wide stride-2 kernel, neighbouring pixels read the same input columns and LLVM keeps
    those loads live, so the register file runs out sooner: the ResNet stem (3->64 7x7/2 at
    224x224, 2 threads) took 1.42 ms with the 14-pixel AVX-512 tile and 0.62-0.70 ms with 7-8
    pixels; on AVX2 code 4 pixels (8 accumulators) was fastest, 1.19 ms against 1.44 ms at 5.
    """

    name: str
    lanes: int  # float32 values in one vector register
    registers: int  # architectural vector registers
    max_accumulators: int
    preferred_accumulators: int
    wide_kernel_accumulators: int = 8


# Feature that proves the unit -> the unit; the first feature the target has wins.
_ISA_BY_FEATURE: tuple[tuple[str, VectorISA], ...] = (
    ("avx512f", VectorISA("avx512", lanes=16, registers=32, max_accumulators=14, preferred_accumulators=14)),
    ("avx2", VectorISA("avx2", lanes=8, registers=16, max_accumulators=10, preferred_accumulators=8)),
    ("avx", VectorISA("avx", lanes=8, registers=16, max_accumulators=10, preferred_accumulators=8)),
    ("neon", VectorISA("neon", lanes=4, registers=32, max_accumulators=14, preferred_accumulators=14)),
)
# SSE (and NEON above) are not measured: they take the counts of the x86 unit with as many
# registers.
_BASELINE_ISA = VectorISA("sse", lanes=4, registers=16, max_accumulators=10, preferred_accumulators=8)


def vector_isa(target: Target) -> VectorISA:
    """The widest float32 vector unit ``target`` (its ``mcpu`` and ``mattr``) has."""
    if target.kind.name != "llvm":
        return _BASELINE_ISA
    for feature, isa in _ISA_BY_FEATURE:
        if llvm_codegen.llvm_cpu_has_features(feature, target):
            return isa
    return _BASELINE_ISA


def vector_chunk(N: int, isa: VectorISA) -> int:
    """Lanes of one vector op over the N output channels of a block (N itself when it fits)."""
    if N <= isa.lanes:
        return N
    return math.gcd(N, isa.lanes)


@dataclass(frozen=True)
class ConvTile:
    """One schedule choice: a register tile of ``rows x cols`` output pixels, how padding is done,
    and what a parallel task computes.

    ``padding``: ``"inline"`` reads the unpadded input under a bounds condition (no copy);
    ``"stage"`` first copies the input into a zero-padded buffer inside the same kernel (a
    parallel, vectorised pass) so the hot loop has no condition. ``parallel``: see
    :data:`PARALLEL_MODES` (``"block_rows"`` or ``"pixels"``).
    """

    rows: int
    cols: int
    padding: str = PADDING_INLINE
    parallel: str = PARALLEL_BLOCK_ROWS

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KernelSpecError(f"ConvTile.{name} must be an integer >= 1, got {value!r}")
        if self.padding not in PADDING_MODES:
            raise KernelSpecError(f"ConvTile.padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")
        if self.parallel not in PARALLEL_MODES:
            raise KernelSpecError(f"ConvTile.parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}")

    @property
    def pixels(self) -> int:
        return self.rows * self.cols

    def accumulators(self, N: int, isa: VectorISA) -> int:
        """Vector registers holding the tile's partial sums."""
        return self.pixels * vectors_per_pixel(N, isa)


def vectors_per_pixel(N: int, isa: VectorISA) -> int:
    """Vector registers that hold the N output channels of one pixel."""
    return N // vector_chunk(N, isa)


def _padded(extent: int, tile: int) -> int:
    return math.ceil(extent / tile) * tile


def output_waste(spec: BlockSparseConvSpec, tile: ConvTile) -> float:
    """Computed pixels per real output pixel (>= 1: the output is padded to whole tiles)."""
    computed = _padded(spec.out_height, tile.rows) * _padded(spec.out_width, tile.cols)
    return computed / (spec.out_height * spec.out_width)


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
    kh, kw = spec.kernel_size
    rows_read = _input_extent_read(spec.height, spec.out_height, kh, spec.stride[0])
    cols_read = _input_extent_read(spec.width, spec.out_width, kw, spec.stride[1])
    input_bytes = 4 * spec.batch * rows_read * cols_read * spec.in_channels
    weight_bytes = 4 * spec.out_channels * spec.kept_per_row * kh * kw
    tasks = spec.batch * math.ceil(spec.out_height / tile_rows)
    return {PARALLEL_BLOCK_ROWS: spec.block_rows * input_bytes, PARALLEL_PIXELS: tasks * weight_bytes}[parallel]


def preferred_parallel(spec: BlockSparseConvSpec) -> str:
    """The parallel mode that streams fewer bytes (:func:`streamed_bytes`)."""
    return min(PARALLEL_MODES, key=lambda parallel: streamed_bytes(spec, parallel))


def tile_candidates(
    spec: BlockSparseConvSpec,
    isa: VectorISA,
    padding: str = PADDING_INLINE,
    parallel: str | None = None,
) -> list[ConvTile]:
    """Every tile that fits ``isa``'s registers, cheapest first by :func:`tile_cost`.

    ``parallel`` defaults to :func:`preferred_parallel`. Ties go to the tile with less output
    padding, then to one-row, then to wider tiles. A tile never exceeds the output (a 7-wide
    output gets no 8-wide tile).
    """
    parallel = preferred_parallel(spec) if parallel is None else parallel
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


def heuristic_tile(spec: BlockSparseConvSpec, isa: VectorISA) -> ConvTile:
    """The cost model's best one-row tile within :func:`preferred_accumulators`, padding done
    inline (no copy), in the :func:`preferred_parallel` mode: the no-timing default."""
    cap = preferred_accumulators(spec, isa)
    preferred = [
        tile
        for tile in tile_candidates(spec, isa)
        if tile.rows == 1 and tile.accumulators(spec.block_size, isa) <= cap
    ]
    return preferred[0] if preferred else ConvTile(1, 1, PADDING_INLINE, preferred_parallel(spec))


def cheapest_block_size(spec: BlockSparseConvSpec, block_sizes: tuple[int, ...], isa: VectorISA) -> int:
    """Of ``block_sizes`` that divide ``spec.out_channels``, the N whose heuristic tile has the
    lowest :func:`tile_cost` for ``spec`` at that N (ties: the earlier in ``block_sizes``). For
    layers whose N is free, i.e. dense ones."""
    candidates = [size for size in block_sizes if spec.out_channels % size == 0]
    if not candidates:
        raise KernelSpecError(f"none of the block sizes {block_sizes} divides out_channels={spec.out_channels}")

    def cost(block_size: int) -> float:
        at_size = dataclasses.replace(spec, block_size=block_size)
        return tile_cost(at_size, heuristic_tile(at_size, isa), isa)

    return min(candidates, key=cost)

