"""L1 geometry by CPU, the lines a conv tile's input window puts in one cache set, and the
heuristic tile reading a copy of its input with longer pixels where its window crowds a set."""

from __future__ import annotations

import pytest

pytest.importorskip("tvm")

from subp_fx.codegen.kernels.cache import (  # noqa: E402
    DEFAULT_L1,
    DEFAULT_L2_BYTES,
    OVERFLOW,
    L1DataCache,
    l1_data_cache,
    l2_bytes,
    window_lines_per_set,
)
from subp_fx.codegen.kernels.isa import VectorISA  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile  # noqa: E402
from subp_fx.codegen.kernels.tiling import heuristic_tile, input_lines_per_set, spared_l1  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402

AVX512 = VectorISA("avx512", lanes=16, registers=32, max_accumulators=14, preferred_accumulators=14)
TWELVE_WAY = L1DataCache(ways=12)


@pytest.mark.parametrize(
    ("cpu", "ways"), [("icelake-server", 12), ("rocketlake", 12), ("znver4", 8), ("znver3", 8), ("haswell", 8)]
)
def test_the_ways_come_from_the_targets_cpu(cpu, ways):
    cache = l1_data_cache(parse_target(f"llvm -mcpu={cpu}"))
    assert (cache.sets, cache.ways, cache.line) == (64, ways, 64)
    assert cache.lines_per_set_limit == OVERFLOW * ways


def test_a_target_without_a_cpu_gets_the_smaller_default():
    assert l1_data_cache(parse_target("llvm")) == DEFAULT_L1 and DEFAULT_L1.ways == 8


@pytest.mark.parametrize(
    ("cpu", "kib"), [("znver3", 512), ("znver4", 1024), ("rocketlake", 512), ("icelake-server", 1280), ("haswell", 256)]
)
def test_the_l2_comes_from_the_targets_cpu(cpu, kib):
    assert l2_bytes(parse_target(f"llvm -mcpu={cpu}")) == kib * 1024


def test_an_unknown_cpu_gets_the_smallest_l2():
    assert l2_bytes(parse_target("llvm")) == DEFAULT_L2_BYTES == 256 * 1024


def _lines(window_rows, window_cols, channels, width):
    pixel = 4 * channels
    return window_lines_per_set(
        window_rows=window_rows, window_cols=window_cols, row_bytes=width * pixel, pixel_bytes=pixel, cache=TWELVE_WAY
    )


def test_lines_per_set_by_hand():
    # 256 float32 channels: pixels 1 KiB = 16 lines apart, so columns cycle through 4 sets; a
    # 28-pixel row is 448 lines, a multiple of 64: every row lands on the same sets.
    assert _lines(3, 28, 256, 28) == 7 * 3  # 28 columns: 7 a set, in each of 3 rows
    assert _lines(3, 15, 256, 28) == 4 * 3  # 15 columns: 4, 4, 4, 3 a set
    # a 14-pixel row is 224 lines: every other row shifts the sets by 32; 14 columns fill the 4
    # sets 4, 4, 3, 3 in rows 0 and 2 and 3, 3, 4, 4 in row 1
    assert _lines(3, 14, 256, 14) == 4 + 3 + 4
    # 1x1 over 1024 channels (4 KiB a pixel, 64 lines): every pixel in one set
    assert _lines(1, 14, 1024, 14) == 14
    # 16 channels (one line a pixel): consecutive sets, one line each
    assert _lines(1, 14, 16, 56) == 1
    # 4 channels: 4 pixels share a line
    assert _lines(1, 8, 4, 8) == 1


def test_a_tiles_window_is_what_the_input_has():
    spec = _spec(28, 256, 3, 2, 132)
    # 1 x 14 at stride 2 would span 29 columns: the input has 28 (the 29th is padding)
    assert input_lines_per_set(spec, ConvTile(1, 14), TWELVE_WAY) == _lines(3, 28, 256, 28)
    assert input_lines_per_set(spec, ConvTile(1, 7), TWELVE_WAY) == _lines(3, 15, 256, 28)
    assert input_lines_per_set(spec, ConvTile(2, 7), TWELVE_WAY) == _lines(5, 15, 256, 28)


def _spec(height, channels, kernel, stride, keep):
    return BlockSparseConvSpec(1, height, height, channels, channels, 16, keep, kernel, stride, kernel // 2, bias=True)


def test_a_copied_window_counts_the_padding_and_the_longer_pixels():
    spec = _spec(28, 256, 3, 2, 132)
    # staged: 1 x 14 at stride 2 reads 29 columns, padding included, of a copy as wide (what the
    # one column tile reads); unpadded pixels stay 1 KiB apart
    staged = ConvTile(1, 14, "stage")
    assert input_lines_per_set(spec, staged, TWELVE_WAY) == _lines(3, 29, 256, 29)
    # with one line more a pixel (272 channels' worth), 29 columns x 3 rows spread out
    padded = ConvTile(1, 14, "stage", pixel_pad=16)
    assert input_lines_per_set(spec, padded, TWELVE_WAY) == window_lines_per_set(
        window_rows=3, window_cols=29, row_bytes=29 * 272 * 4, pixel_bytes=272 * 4, cache=TWELVE_WAY
    )
    assert input_lines_per_set(spec, padded, TWELVE_WAY) <= 3
    # read under bounds checks, the copy is the input's shape: 28 columns (the 29th is padding)
    assert input_lines_per_set(spec, ConvTile(1, 14, "inline", pixel_pad=16), TWELVE_WAY) == window_lines_per_set(
        window_rows=3, window_cols=28, row_bytes=28 * 272 * 4, pixel_bytes=272 * 4, cache=TWELVE_WAY
    )
    # an unpadded 1x1 conv copied only for its pixel padding: its window is the input's
    one_by_one = BlockSparseConvSpec(1, 14, 14, 1024, 256, 16, 528, 1, 1, 0)
    assert input_lines_per_set(one_by_one, ConvTile(1, 14), TWELVE_WAY) == 14
    assert input_lines_per_set(one_by_one, ConvTile(1, 14, pixel_pad=16), TWELVE_WAY) == 1
    assert input_lines_per_set(one_by_one, ConvTile(1, 14, "stage", pixel_pad=16), TWELVE_WAY) == 1


EIGHT_WAY = L1DataCache(ways=8)


@pytest.mark.parametrize(
    "spec, cache",
    [
        (_spec(28, 256, 3, 2, 132), TWELVE_WAY),  # ResNet-50 layer3.0.conv2: 1 x 14 puts 21 lines in a set
        (_spec(28, 256, 3, 2, 132), EIGHT_WAY),
        (_spec(14, 512, 3, 2, 264), TWELVE_WAY),  # layer4.0.conv2: 1 x 7, 21 lines
        (BlockSparseConvSpec(1, 14, 14, 1024, 256, 16, 528, 1, 1, 0), EIGHT_WAY),  # 1x1: 14 pixels in one set
        (BlockSparseConvSpec(1, 28, 28, 512, 1024, 16, 264, 1, 2, 0), EIGHT_WAY),  # 1x1/2: 14 in one set
    ],
)
def test_a_crowding_tile_keeps_its_shape_and_reads_a_copy_with_longer_pixels(spec, cache):
    unspared = heuristic_tile(spec, AVX512)
    assert input_lines_per_set(spec, unspared, cache) > cache.lines_per_set_limit
    tile = heuristic_tile(spec, AVX512, cache)
    assert (tile.rows, tile.cols, tile.parallel, tile.padding) == (
        unspared.rows,
        unspared.cols,
        unspared.parallel,
        unspared.padding,
    )
    assert tile.pixel_pad == cache.line // 4
    assert input_lines_per_set(spec, tile, cache) <= cache.lines_per_set_limit
    assert spared_l1(spec, unspared, cache) == tile


@pytest.mark.parametrize(
    "spec, cache",
    [
        # stride 1: 11 lines a set, more than 8 ways but within the limit (in place they ran
        # faster than from any staged copy, see cache.OVERFLOW)
        (_spec(14, 256, 3, 1, 132), EIGHT_WAY),
        (_spec(7, 512, 3, 1, 264), EIGHT_WAY),
        (_spec(56, 128, 3, 2, 66), TWELVE_WAY),
        (BlockSparseConvSpec(1, 14, 14, 1024, 256, 16, 528, 1, 1, 0), TWELVE_WAY),  # 14 lines: within 18
        (BlockSparseConvSpec(1, 56, 56, 64, 256, 16, 33, 1, 1, 0), EIGHT_WAY),  # 256-byte pixels: 1 a set
    ],
)
def test_tiles_within_the_limit_are_left_alone(spec, cache):
    assert input_lines_per_set(spec, heuristic_tile(spec, AVX512), cache) <= cache.lines_per_set_limit
    assert heuristic_tile(spec, AVX512, cache) == heuristic_tile(spec, AVX512)
    assert spared_l1(spec, heuristic_tile(spec, AVX512), cache) is None


def test_when_the_copy_crowds_too_the_cost_models_choice_stands():
    tiny = L1DataCache(ways=1)  # one line a set: no 3x3 window fits, padded or not
    spec = _spec(28, 256, 3, 2, 132)
    assert spared_l1(spec, heuristic_tile(spec, AVX512), tiny) is None
    assert heuristic_tile(spec, AVX512, tiny) == heuristic_tile(spec, AVX512)
