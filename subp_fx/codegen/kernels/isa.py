"""The SIMD unit a kernel is scheduled for: float32 lanes and measured register budgets
(``VectorISA``), the int8 dot-product path (``Int8Path``) and the bf16 one (``Bf16Path``).

``vector_isa(target)``, ``int8_path(target)`` and ``bf16_path(target)`` read them from a TVM target (the only functions
here that touch TVM, imported when called, so the tile and spec vocabulary stays importable
without TVM).
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
    return _first_with_feature(target, _ISA_BY_FEATURE, _BASELINE_ISA)


def _first_with_feature(target: Target, table: tuple, baseline):
    """The entry of ``table`` ((feature, value) pairs) whose feature an LLVM ``target`` has first,
    else ``baseline``."""
    from tvm.target import codegen as llvm_codegen

    if target.kind.name != "llvm":
        return baseline
    for feature, value in table:
        if llvm_codegen.llvm_cpu_has_features(feature, target):
            return value
    return baseline


def vector_chunk(N: int, isa: VectorISA) -> int:
    """Lanes of one vector op over the N output channels of a block (N itself when it fits)."""
    if N <= isa.lanes:
        return N
    return math.gcd(N, isa.lanes)


def vectors_per_pixel(N: int, isa: VectorISA) -> int:
    """Vector registers that hold the N output channels of one pixel."""
    return N // vector_chunk(N, isa)


@dataclass(frozen=True)
class Int8Path:
    """How the int8 conv kernel multiplies 4 uint8 activations by 4 int8 weights into an int32 lane.

    ``dot``: ``"vpdpbusd"`` (VNNI: one instruction sums the 4 products into each lane, no
    saturation), ``"pmaddwd"`` (no VNNI: bytes widened to int16, two ``pmaddwd`` of 2 products per
    lane each -- exact, unlike ``pmaddubsw`` whose int16 pair sums saturate at 255 * 127 * 2), or
    ``"int32"`` (plain widening int32 multiply-adds LLVM vectorises: any other CPU). ``lanes``:
    int32 lanes of one vector; ``intrinsic``: the LLVM intrinsic of ``dot``. ``max_accumulators``:
    the register-tile cap (vectors of partial sums), leaving room for the weight vectors and
    broadcasts of one reduction step; at 14 zmm the accumulator buffer stays under 1 KiB, so
    on the stack (see ``loops.ACCUMULATOR_SCOPE``), and the VNNI 3x3 tile's hot loop has no spill
    (checked in the assembly by the tests). ``name`` is what the kernel table shows.
    """

    name: str
    dot: str
    lanes: int
    intrinsic: str | None
    max_accumulators: int
    # Whether an int8 build on this path is at least as fast as fp32 on the same target (else the
    # compile report says it is slower). Measured on ResNet-18 60/128 (G=4 masks; Ice Lake server,
    # 2 threads, each target's code run on that host; ``benchmarks/int8_paths.py``, every build
    # interleaved): icelake-server code (avx512-vnni) 3.8-4.0 ms int8 against 12.7-13.3 fp32 (3.35x);
    # skylake-avx512 code (avx512-pmaddwd) 14.2-15.2 against 12.7-13.1 (0.86-0.89x): a tap costs 2
    # byte shuffles + 2 vpmaddwd + 2 vpaddd per 64 multiply-adds on two ports where fp32 needs 4 zmm
    # FMAs; haswell code (avx2-pmaddwd) 20.2-21.7 against 19.4-20.9 (0.96x; 0.94-1.65x in six runs
    # that interleaved only the two haswell builds), so no faster either. A real AVX2 CPU such as
    # Zen 3 is not measured. The pmaddwd paths' ``max_accumulators`` were timed the same way (the two
    # builds alone): avx2 4 / 6 / 8 -> 15.4 / 11.9 / 21.0 ms (8 spilled), avx512 8 / 10 / 14 -> 13.4 /
    # 13.6 / 15.9 ms.
    faster_than_fp32: bool = False


# Feature that proves the path -> the path; the first feature the target has wins. avx512vnni
# before avxvnni: a CPU with both (Sapphire Rapids) does 16 lanes per instruction, not 8.
_INT8_PATH_BY_FEATURE: tuple[tuple[str, Int8Path], ...] = (
    (
        "avx512vnni",
        Int8Path("avx512-vnni", "vpdpbusd", 16, "llvm.x86.avx512.vpdpbusd.512", 14, faster_than_fp32=True),
    ),
    ("avxvnni", Int8Path("avx-vnni", "vpdpbusd", 8, "llvm.x86.avx512.vpdpbusd.256", 10, faster_than_fp32=True)),
    ("avx512bw", Int8Path("avx512-pmaddwd", "pmaddwd", 16, "llvm.x86.avx512.pmaddw.d.512", max_accumulators=8)),
    ("avx2", Int8Path("avx2-pmaddwd", "pmaddwd", 8, "llvm.x86.avx2.pmadd.wd", max_accumulators=6)),
)
_BASELINE_INT8_PATH = Int8Path("generic-int32", "int32", 4, None, max_accumulators=8)


def int8_path_named(name: str) -> Int8Path | None:
    """The :class:`Int8Path` whose ``name`` (as the kernel table shows it) is ``name``, or None."""
    paths = [path for _, path in _INT8_PATH_BY_FEATURE] + [_BASELINE_INT8_PATH]
    return next((path for path in paths if path.name == name), None)


def int8_path(target: Target) -> Int8Path:
    """The fastest int8 dot-product path ``target`` (its ``mcpu`` and ``mattr``) has."""
    return _first_with_feature(target, _INT8_PATH_BY_FEATURE, _BASELINE_INT8_PATH)


@dataclass(frozen=True)
class Bf16Path:
    """How the bf16 conv kernel multiplies 2 bf16 activations by 2 bf16 weights into a float32
    lane: ``vdpbf16ps`` (AVX-512 BF16), 16 lanes a zmm. ``max_accumulators`` as
    :class:`Int8Path`'s (the same nest, the same register file). ``name``: the kernel table's."""

    name: str
    lanes: int
    max_accumulators: int


_BF16_PATH_BY_FEATURE: tuple[tuple[str, Bf16Path], ...] = (("avx512bf16", Bf16Path("avx512-bf16", 16, 14)),)


def bf16_path(target: Target) -> Bf16Path | None:
    """The bf16 dot-product path ``target`` has, or None (no avx512_bf16: no bf16 kernels)."""
    return _first_with_feature(target, _BF16_PATH_BY_FEATURE, None)
