"""The float32 SIMD unit a kernel is scheduled for: its lanes and measured register budgets.

``vector_isa(target)`` reads the unit from a TVM target (the only function here that touches TVM,
imported when called, so the tile and spec vocabulary stays importable without TVM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvm.target import Target


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
    from tvm.target import codegen as llvm_codegen

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


def vectors_per_pixel(N: int, isa: VectorISA) -> int:
    """Vector registers that hold the N output channels of one pixel."""
    return N // vector_chunk(N, isa)
