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

# Tiles taller than this waste too much on the bottom rows of small feature maps for no
# measured gain (2 rows helped only when the width left few pixels per row).
MAX_TILE_ROWS = 2
# The heuristic keeps the accumulators to this share of the vector registers. On AVX2 (16
# registers) the measured best tiles were N=16 x 4 pixels and N=32 x 2 pixels: 8 accumulators.
# Tiles that fit on paper with fewer registers to spare (N=16 x 6 pixels: 12 accumulators + 2
# weight vectors + 1 broadcast = 15 of 16) ran 10-20% slower.
ACCUMULATOR_SHARE = 0.5


@dataclass(frozen=True)
class VectorISA:
    """The float32 SIMD unit the kernel is scheduled for."""

    name: str
    lanes: int  # float32 values in one vector register
    registers: int  # architectural vector registers


# Feature that proves the unit -> the unit; the first feature the target has wins.
_ISA_BY_FEATURE: tuple[tuple[str, VectorISA], ...] = (
    ("avx512f", VectorISA("avx512", lanes=16, registers=32)),
    ("avx2", VectorISA("avx2", lanes=8, registers=16)),
    ("avx", VectorISA("avx", lanes=8, registers=16)),
    ("neon", VectorISA("neon", lanes=4, registers=32)),
)
_BASELINE_ISA = VectorISA("sse", lanes=4, registers=16)


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
    """One schedule choice: a register tile of ``rows x cols`` output pixels, and how padding is done.

    ``padding``: ``"inline"`` reads the unpadded input under a bounds condition (no copy);
    ``"stage"`` first copies the input into a zero-padded buffer inside the same kernel (a
    parallel, vectorised pass) so the hot loop has no condition.
    """

    rows: int
    cols: int
    padding: str = PADDING_INLINE

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KernelSpecError(f"ConvTile.{name} must be an integer >= 1, got {value!r}")
        if self.padding not in PADDING_MODES:
            raise KernelSpecError(f"ConvTile.padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")

    @property
    def pixels(self) -> int:
        return self.rows * self.cols

    def accumulators(self, N: int, isa: VectorISA) -> int:
        """Vector registers holding the tile's partial sums."""
        return self.pixels * vectors_per_pixel(N, isa)

    def vector_registers(self, N: int, isa: VectorISA) -> int:
        """Registers the hot loop needs: accumulators, one block's weight vectors, a broadcast."""
        return self.accumulators(N, isa) + vectors_per_pixel(N, isa) + 1


def vectors_per_pixel(N: int, isa: VectorISA) -> int:
    """Vector registers that hold the N output channels of one pixel."""
    return N // vector_chunk(N, isa)


def _padded(extent: int, tile: int) -> int:
    return math.ceil(extent / tile) * tile


def tile_cost(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> float:
    """Relative time per useful FMA: padded work times memory operations per FMA.

    Per reduction step the tile does ``pixels * V`` FMAs (V vectors per pixel) and loads V weight
    vectors plus one broadcast per pixel, so there are ``1/pixels + 1/V`` loads per FMA; that is
    scaled by the share of computed pixels that are real (the rest pads the output to whole tiles).
    """
    vectors = vectors_per_pixel(spec.block_size, isa)
    computed = _padded(spec.out_height, tile.rows) * _padded(spec.out_width, tile.cols)
    waste = computed / (spec.out_height * spec.out_width)
    return waste * (1.0 / vectors + 1.0 / tile.pixels)


def fits_registers(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> bool:
    """Whether accumulators + one block's weight vectors + a broadcast fit the register file."""
    return tile.vector_registers(spec.block_size, isa) <= isa.registers


def _within_accumulator_share(spec: BlockSparseConvSpec, tile: ConvTile, isa: VectorISA) -> bool:
    return tile.accumulators(spec.block_size, isa) <= isa.registers * ACCUMULATOR_SHARE


def tile_candidates(spec: BlockSparseConvSpec, isa: VectorISA, padding: str = PADDING_INLINE) -> list[ConvTile]:
    """Every tile that fits ``isa``'s registers, most promising first.

    First the tiles whose accumulators stay within :data:`ACCUMULATOR_SHARE` of the registers,
    then the larger ones; each group cheapest first by :func:`tile_cost`, ties to one-row, then
    wider tiles. A tile never exceeds the output (a 7-wide output gets no 8-wide tile).
    """
    tiles = [
        ConvTile(rows, cols, padding)
        for rows in range(1, min(MAX_TILE_ROWS, spec.out_height) + 1)
        for cols in range(1, spec.out_width + 1)
    ]
    fitting = [tile for tile in tiles if fits_registers(spec, tile, isa)] or [ConvTile(1, 1, padding)]
    return sorted(
        fitting,
        key=lambda tile: (
            not _within_accumulator_share(spec, tile, isa),
            round(tile_cost(spec, tile, isa), 6),
            tile.rows,
            -tile.cols,
        ),
    )


def heuristic_tile(spec: BlockSparseConvSpec, isa: VectorISA) -> ConvTile:
    """The cost model's best tile, with padding done inline (no copy): the no-timing default."""
    return tile_candidates(spec, isa)[0]
