"""The L1 data cache a kernel runs against, and how many of a conv tile's input lines share a set.

Why it matters: in NHWC a conv tile reads, for one input channel, one cache line per input pixel
of its window, and those lines lie a pixel's bytes (C x 4 for float32) apart. When that stride
is a multiple of 1 KiB, the lines fall into a handful of the L1's 64 sets (C=256: every 16th
set, 4 in all; C=512: 2; C=1024: 1), and a window of more lines than those sets have ways evicts
its own lines within one reduction step. Measured on Ice Lake server (48 KiB 12-way L1, 2
threads, fp32, N=16, 3x3 stride-2 convs at 50% keep): 256->256 at 28x28 with a 1 x 14 tile reads
28 columns x 3 rows = 84 lines, 21 in each of 4 sets: 1256 us; a 1 x 7 tile, 12 a set: 752 us.
On Zen 4 (32 KiB 8-way): 1x1 1024->256 at 14x14, 14 pixels in one set, 380 us; the same tile
reading a copy whose pixels are one line longer (every pixel in its own set) 242 us. The
remedy the kernels take is that copy (``tiling.spared_l1``).

The geometry is a property of the CPU, not of its vector ISA (Zen 4 and Ice Lake both have
AVX-512, with 8 and 12 ways), so it comes from the target's ``mcpu`` (:data:`L1_BY_CPU`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tvm.target import Target

# A tile's input window is taken to crowd the L1 when one set holds more than this many times
# its ways of the window's lines. Why not at the ways: the copy that spares the L1 then gains
# nothing (Zen 4, 2 threads, 3x3 stride-1 convs whose 1 x 14 / 1 x 7 windows put 11 lines in a set
# of 8 ways: 256->256 at 14x14 454 us in place, 465 from a copy with longer pixels; 512->512 at 7x7
# 442 and 443), while 14 lines and more have cost far more than the copy (the module docstring;
# 3x3/2 256->256 at 28x28, 1 x 14, 21 a set: 1054 us in place, 561 from the copy).
OVERFLOW = 1.5


@dataclass(frozen=True)
class L1DataCache:
    """Sets x ways of ``line``-byte lines."""

    sets: int = 64
    ways: int = 8
    line: int = 64

    @property
    def lines_per_set_limit(self) -> float:
        """The most of a tile's input lines one set may hold before the tile crowds it
        (:data:`OVERFLOW` x ways)."""
        return OVERFLOW * self.ways


# 64 sets of 64-byte lines on every x86 core this project has met; what differs is the ways.
# Intel cores since Sunny Cove (Ice Lake, Tiger Lake, Rocket Lake, Sapphire Rapids and after)
# have 48 KiB 12-way L1s; Skylake and earlier, and AMD Zen 1-4, 32 KiB 8-way. Any other CPU
# (or no mcpu) gets the 8-way default, the smaller of the two.
_TWELVE_WAY = L1DataCache(ways=12)
L1_BY_CPU: dict[str, L1DataCache] = {
    cpu: _TWELVE_WAY
    for cpu in (
        "icelake-server",
        "icelake-client",
        "tigerlake",
        "rocketlake",
        "sapphirerapids",
        "emeraldrapids",
        "graniterapids",
        "alderlake",
        "raptorlake",
        "meteorlake",
        "arrowlake",
        "lunarlake",
    )
}
DEFAULT_L1 = L1DataCache()

# A core's own L2, in bytes, by mcpu: where a stream a kernel reads again and again stays once it
# was read (``tiling.preferred_parallel``). Unknown CPUs (or no mcpu) get the smallest seen on an
# x86 core with AVX2, so that no stream is wrongly taken to stay.
_KIB = 1024
L2_BYTES_BY_CPU: dict[str, int] = {
    **dict.fromkeys(("haswell", "broadwell", "skylake"), 256 * _KIB),
    **dict.fromkeys(("znver1", "znver2", "znver3", "icelake-client", "rocketlake"), 512 * _KIB),
    **dict.fromkeys(("znver4", "znver5", "skylake-avx512", "cascadelake", "cooperlake"), 1024 * _KIB),
    **dict.fromkeys(("icelake-server", "tigerlake", "alderlake", "meteorlake"), 1280 * _KIB),
    **dict.fromkeys(
        ("sapphirerapids", "emeraldrapids", "graniterapids", "raptorlake", "arrowlake", "lunarlake"), 2048 * _KIB
    ),
}
DEFAULT_L2_BYTES = 256 * _KIB


def l1_data_cache(target: Target) -> L1DataCache:
    """The L1 data cache of ``target``'s CPU (its ``mcpu``; :data:`DEFAULT_L1` when unknown)."""
    cpu = target.attrs.get("mcpu") if target.kind.name == "llvm" else None
    return L1_BY_CPU.get(str(cpu), DEFAULT_L1) if cpu is not None else DEFAULT_L1


def l2_bytes(target: Target) -> int:
    """The per-core L2 size of ``target``'s CPU (its ``mcpu``; :data:`DEFAULT_L2_BYTES` when unknown)."""
    cpu = target.attrs.get("mcpu") if target.kind.name == "llvm" else None
    return L2_BYTES_BY_CPU.get(str(cpu), DEFAULT_L2_BYTES) if cpu is not None else DEFAULT_L2_BYTES


def window_lines_per_set(
    *, window_rows: int, window_cols: int, row_bytes: int, pixel_bytes: int, cache: L1DataCache
) -> int:
    """The most lines of one set that an input window of ``window_rows x window_cols`` pixels
    takes for one channel, a pixel ``pixel_bytes`` and a row ``row_bytes`` apart (from the
    channel's address in the first pixel; pixels closer than a line share it)."""
    lines = {
        (row * row_bytes + col * pixel_bytes) // cache.line for row in range(window_rows) for col in range(window_cols)
    }
    return max(Counter(line % cache.sets for line in lines).values())


__all__ = [
    "DEFAULT_L1",
    "DEFAULT_L2_BYTES",
    "L1DataCache",
    "L1_BY_CPU",
    "L2_BYTES_BY_CPU",
    "OVERFLOW",
    "l1_data_cache",
    "l2_bytes",
    "window_lines_per_set",
]
