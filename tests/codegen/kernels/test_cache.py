"""L1 geometry by CPU, the lines a conv tile's input window puts in one cache set, and the
heuristic tile passing over windows that crowd a set."""

from __future__ import annotations

import pytest

pytest.importorskip("tvm")

from subp_fx.codegen.kernels.cache import (  # noqa: E402
    DEFAULT_L1,
    OVERFLOW,
    L1DataCache,
    l1_data_cache,
    window_lines_per_set,
)
from subp_fx.codegen.kernels.isa import VectorISA  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile  # noqa: E402
from subp_fx.codegen.kernels.tiling import MIN_UNCROWDED_PIXELS, heuristic_tile, input_lines_per_set  # noqa: E402
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


def test_the_heuristic_passes_over_a_tile_that_crowds_a_set():
    # ResNet-50 layer3.0.conv2: the cost model's 1 x 14 tile puts 21 lines in a set of 12 ways
    spec = _spec(28, 256, 3, 2, 132)
    assert (heuristic_tile(spec, AVX512).rows, heuristic_tile(spec, AVX512).cols) == (1, 14)
    tile = heuristic_tile(spec, AVX512, TWELVE_WAY)
    assert input_lines_per_set(spec, tile, TWELVE_WAY) <= TWELVE_WAY.lines_per_set_limit
    assert (tile.rows, tile.cols) == (1, 7)
    # layer4.0.conv2 (512 channels at 14): 1 x 7 puts 21 lines in a set; 1 x 4, 15
    spec = _spec(14, 512, 3, 2, 264)
    assert (heuristic_tile(spec, AVX512).cols, heuristic_tile(spec, AVX512, TWELVE_WAY).cols) == (7, 4)


@pytest.mark.parametrize(
    "spec",
    [
        _spec(14, 256, 3, 1, 132),  # stride 1: 11 lines a set, within the ways
        _spec(7, 512, 3, 1, 264),  # 11 a set
        BlockSparseConvSpec(1, 14, 14, 1024, 256, 16, 528, 1, 1, 0),  # 1x1: 14 in one set
        _spec(56, 128, 3, 2, 66),
    ],
)
def test_tiles_within_the_limit_are_left_alone(spec):
    assert heuristic_tile(spec, AVX512, TWELVE_WAY) == heuristic_tile(spec, AVX512)


def test_when_no_tile_fits_the_cost_models_choice_stands():
    tiny = L1DataCache(ways=1)  # 1.5 lines a set: nothing with a 3x3 window fits
    spec = _spec(28, 256, 3, 2, 132)
    assert heuristic_tile(spec, AVX512, tiny) == heuristic_tile(spec, AVX512)


def test_the_padding_stage_choice_follows_the_new_tile():
    spec = _spec(28, 256, 3, 2, 132)
    tile = heuristic_tile(spec, AVX512, TWELVE_WAY)
    assert isinstance(tile, ConvTile) and tile.padding in ("inline", "stage")


def test_1x1_tiles_are_left_alone_even_when_crowded():
    eight_way = L1DataCache(ways=8)  # limit 12 lines a set
    spec = BlockSparseConvSpec(1, 14, 14, 1024, 256, 16, 528, 1, 1, 0)  # 14 pixels in one set
    assert input_lines_per_set(spec, heuristic_tile(spec, AVX512), eight_way) > eight_way.lines_per_set_limit
    assert heuristic_tile(spec, AVX512, eight_way) == heuristic_tile(spec, AVX512)


def test_no_tile_below_half_the_first_choices_pixels():
    eight_way = L1DataCache(ways=8)
    spec = _spec(14, 512, 3, 2, 264)  # first choice 1 x 7; 1 x 4 puts 15 lines in a set, 1 x 3 12
    assert input_lines_per_set(spec, ConvTile(1, 3), eight_way) <= eight_way.lines_per_set_limit
    assert heuristic_tile(spec, AVX512, eight_way) == heuristic_tile(spec, AVX512)


def test_no_tile_under_four_pixels_to_spare_the_cache():
    # wide_resnet50_2 layer4.0.conv2 at 112 px: 1 x 4 puts 21 lines in a 12-way set, 1 x 2 only 15,
    # but 1 x 2 ran 1.46x slower (1819 against 1249 us): the crowded 1 x 4 stays
    spec = BlockSparseConvSpec(1, 7, 7, 1024, 1024, 16, 512, 3, 2, 1)
    first = heuristic_tile(spec, AVX512)
    assert first.pixels == 4 and input_lines_per_set(spec, first, TWELVE_WAY) > TWELVE_WAY.lines_per_set_limit
    assert input_lines_per_set(spec, ConvTile(1, 2), TWELVE_WAY) <= TWELVE_WAY.lines_per_set_limit
    assert heuristic_tile(spec, AVX512, TWELVE_WAY) == first
    assert MIN_UNCROWDED_PIXELS == 4
