"""The block-sparse conv kernel against torch, its packing, its tiles and its assembly."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.algorithm.masks import expand_block_mask  # noqa: E402
from subp_fx.codegen.errors import BlockLayoutError, KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels.isa import vector_isa  # noqa: E402
from subp_fx.codegen.kernels.packing import (  # noqa: E402
    dense_as_block_sparse,
    kept_indices,
    pack_block_sparse,
    unpack_block_sparse,
)
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile  # noqa: E402
from subp_fx.codegen.kernels.tiling import (  # noqa: E402  # noqa: E402
    cheapest_block_size,
    fits_registers,
    heuristic_tile,
    preferred_parallel,
    reread_bytes,
    streamed_bytes,
    tile_candidates,
    unrolls_outer_loop,
)
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tuning.asm import analyse_asm  # noqa: E402
from subp_fx.codegen.tuning.build import (  # noqa: E402
    build_block_sparse_conv,
    choose_tile,
    compile_block_sparse_conv,
    timing_candidates,  # noqa: E402
)

NATIVE = parse_target("llvm -mcpu=native")
NATIVE_ISA = vector_isa(NATIVE)
AVX2 = vector_isa(parse_target("llvm -mcpu=znver3"))
AVX512 = vector_isa(parse_target("llvm -mcpu=skylake-avx512"))
HOST_HAS_AVX2 = NATIVE_ISA.name in ("avx2", "avx512")
TORCH_ACTIVATIONS = {
    "none": lambda t: t,
    "relu": torch.relu,
    "relu6": lambda t: torch.clamp(t, 0.0, 6.0),
    "silu": torch.nn.functional.silu,
    "sigmoid": torch.sigmoid,
    "hardswish": torch.nn.functional.hardswish,
    "hardsigmoid": torch.nn.functional.hardsigmoid,
}


def _random_uniform_mask(rng: np.random.Generator, rows: int, in_channels: int, kept: int) -> np.ndarray:
    mask = np.zeros((rows, in_channels), dtype=np.float32)
    for row in range(rows):
        mask[row, rng.choice(in_channels, kept, replace=False)] = 1.0
    return mask


def _reference(spec, weight, block_mask, data, bias, residual) -> np.ndarray:
    """torch conv2d (NCHW) on the masked dense weight, then the epilogue, back to NHWC."""
    masked = torch.from_numpy(weight) * expand_block_mask(torch.from_numpy(block_mask), weight.shape)
    out = torch.nn.functional.conv2d(
        torch.from_numpy(data).permute(0, 3, 1, 2),
        masked,
        None if bias is None else torch.from_numpy(bias),
        stride=spec.stride,
        padding=spec.padding,
    ).permute(0, 2, 3, 1)
    if residual is not None:
        out = out + torch.from_numpy(residual)
    return TORCH_ACTIVATIONS[spec.activation](out).numpy()


def _check_against_torch(spec: BlockSparseConvSpec, tile, target=NATIVE, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((spec.out_channels, spec.in_channels, *spec.kernel_size), dtype=np.float32)
    block_mask = _random_uniform_mask(rng, spec.block_rows, spec.in_channels, spec.kept_per_row)
    data = rng.standard_normal(spec.data_shape, dtype=np.float32)
    bias = rng.standard_normal(spec.out_channels, dtype=np.float32) if spec.bias else None
    residual = rng.standard_normal(spec.out_shape, dtype=np.float32) * 2 if spec.residual else None
    values, indices = pack_block_sparse(weight, block_mask, spec.block_size)

    kernel = build_block_sparse_conv(spec, target, tile=tile)
    out = kernel(data, values, indices, bias, residual)

    expected = _reference(spec, weight, block_mask, data, bias, residual)
    assert out.shape == expected.shape == spec.out_shape
    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(out - expected).max() <= 1e-4 * scale


def _spec(batch, size, in_channels, out_channels, N, kept, kernel, stride, padding, **epilogue):
    height, width = (size, size) if isinstance(size, int) else size
    return BlockSparseConvSpec(
        batch, height, width, in_channels, out_channels, N, kept, kernel, stride, padding, **epilogue
    )


# (spec, tile): every case builds one kernel (~0.1 s). Together they cover C_in not a multiple of
# 8, K = 1, K = C_in, stride 2, 1x1 / 3x3 / 5x5, odd and non-square sizes, batch 1 and 3,
# N in {8, 16, 32}, every epilogue, both padding modes, tiles that do and do not divide the output.
NUMERIC_CASES = [
    (_spec(3, 13, 20, 32, 16, 7, 3, 1, 1, bias=True, activation="relu"), "heuristic"),
    (_spec(1, 13, 12, 16, 8, 1, 3, 2, 1, activation="relu6"), "heuristic"),
    (_spec(1, 7, 24, 64, 32, 24, 1, 1, 0, residual=True, activation="relu"), "heuristic"),
    (_spec(3, (9, 11), 10, 32, 16, 5, 5, 1, 2, bias=True), "heuristic"),
    (_spec(1, 13, 9, 16, 8, 4, 5, 2, 2, bias=True, residual=True, activation="relu6"), ConvTile(2, 3, "stage")),
    (_spec(1, 7, 33, 32, 32, 33, 3, 1, 1, bias=True, residual=True, activation="relu"), ConvTile(2, 2)),
    (_spec(3, 7, 16, 48, 16, 16, 3, 1, 0, activation="relu"), ConvTile(1, 3, "stage")),
    (_spec(1, 14, 20, 16, 16, 1, 1, 2, 0, bias=True, residual=True), ConvTile(1, 4)),
    (_spec(3, 13, 5, 8, 8, 3, 3, 2, 1, bias=True, residual=True, activation="relu"), ConvTile(2, 5, "stage")),
    (_spec(1, 7, 64, 64, 16, 34, 3, 1, 1, bias=True, residual=True, activation="relu"), ConvTile(1, 7)),
    (
        _spec(3, 13, 20, 64, 16, 9, 3, 2, 1, bias=True, residual=True, activation="relu"),
        ConvTile(1, 4, "inline", "pixels"),
    ),
    (_spec(1, 14, 36, 64, 32, 17, 1, 1, 0, bias=True, activation="relu6"), ConvTile(2, 3, "inline", "pixels")),
    (_spec(3, (9, 11), 12, 32, 8, 6, 5, 1, 2, residual=True), ConvTile(1, 5, "stage", "pixels")),
    # copies of the input with longer pixels: unpadded 1x1 (plain and "stage", which has nothing
    # to zero-pad), 1x1/2, padded 3x3/2 read under bounds checks and zero-padded, both parallel
    # modes, a pad that is not a line
    (_spec(1, 7, 64, 32, 16, 20, 1, 1, 0, bias=True, residual=True), ConvTile(1, 7, "inline", "pixels", 16)),
    (_spec(1, 7, 64, 32, 16, 20, 1, 1, 0, bias=True, residual=True), ConvTile(1, 7, "stage", "pixels", 16)),
    (_spec(3, 9, 32, 32, 16, 11, 1, 2, 0, activation="relu"), ConvTile(1, 3, "inline", "block_rows", 16)),
    (_spec(1, 13, 48, 32, 16, 17, 3, 2, 1, bias=True, activation="relu"), ConvTile(1, 4, "inline", "block_rows", 16)),
    (_spec(1, 13, 48, 32, 16, 17, 3, 2, 1, bias=True, activation="relu"), ConvTile(1, 4, "stage", "block_rows", 16)),
    (_spec(3, (9, 11), 16, 32, 8, 6, 3, 2, 1, residual=True), ConvTile(2, 3, "stage", "pixels", 5)),
    (_spec(3, (9, 11), 16, 32, 8, 6, 3, 1, 1, residual=True), ConvTile(2, 3, "inline", "pixels", 5)),
]


@pytest.mark.parametrize("spec, tile", NUMERIC_CASES, ids=lambda case: case.__repr__()[:60])
def test_matches_torch_conv2d_on_the_masked_weight(spec, tile):
    _check_against_torch(spec, tile)


def _staged_buffer_strides(spec: BlockSparseConvSpec, tile: ConvTile) -> list[tuple[int, ...]]:
    """The strides of the kernel's staged input buffer once TIR has laid it out (empty if none)."""
    import tvm
    from tvm import s_tir

    from subp_fx.codegen.kernels.block_sparse_conv import block_sparse_conv2d_primfunc

    module = tvm.IRModule({"main": block_sparse_conv2d_primfunc(spec, tile, NATIVE_ISA)})
    module = s_tir.transform.CompactBufferAllocation()(s_tir.transform.ConvertBlocksToOpaque()(module))
    # TVMScript prints the laid-out buffer as `pad = T.sblock_alloc_buffer((shape), strides=(...))`
    found = re.findall(r"pad = T\.sblock_alloc_buffer\(\([^)]*\), strides=\(([^)]*)\)", module.script())
    return [tuple(int(stride) for stride in strides.split(",")) for strides in found]


def test_the_input_copy_lengthens_each_pixel_by_the_pad():
    spec = _spec(1, 7, 64, 32, 16, 20, 1, 1, 0)
    assert _staged_buffer_strides(spec, ConvTile(1, 7, "stage", "pixels")) == []  # nothing to copy
    # 7 x 7 pixels of 64 + 16 floats, the input's shape whether read in place or "staged"
    for padding in ("inline", "stage"):
        assert _staged_buffer_strides(spec, ConvTile(1, 7, padding, "pixels", 16)) == [(7 * 7 * 80, 7 * 80, 80, 1)]
    padded = _spec(1, 13, 48, 32, 16, 17, 3, 2, 1)
    # zero-padded: a 1 x 4 tile computes 8 columns, a 17-wide copy; read under bounds checks: 13 wide
    assert _staged_buffer_strides(padded, ConvTile(1, 4, "stage", "block_rows", 16))[0][1:] == (17 * 64, 64, 1)
    assert _staged_buffer_strides(padded, ConvTile(1, 4, "inline", "block_rows", 16))[0][1:] == (13 * 64, 64, 1)


# MobileNetV3 / EfficientNet / RegNetY epilogues: odd sizes, C_in not a multiple of 8, with and
# without the residual (the activation comes after the add, as the fusion planner fuses it).
@pytest.mark.parametrize(
    "spec",
    [
        _spec(1, (7, 9), 13, 32, 16, 5, 3, 1, 1, bias=True, activation="silu"),
        _spec(3, 5, 20, 16, 8, 20, 1, 1, 0, bias=True, residual=True, activation="silu"),
        _spec(1, 9, 12, 16, 16, 6, 3, 2, 1, bias=True, activation="hardswish"),
        _spec(3, 1, 24, 32, 16, 24, 1, 1, 0, bias=True, activation="sigmoid"),  # an SE gate's expand conv
        _spec(2, 1, 9, 16, 8, 9, 1, 1, 0, bias=True, activation="hardsigmoid"),
    ],
    ids=lambda spec: f"{spec.activation}{'+residual' if spec.residual else ''}",
)
def test_fused_sigmoid_family_epilogues_match_torch(spec):
    _check_against_torch(spec, "heuristic")


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="the host cannot run AVX2 code")
@pytest.mark.parametrize(
    "spec",
    [
        _spec(1, 13, 20, 32, 16, 7, 3, 1, 1, bias=True, residual=True, activation="relu"),
        _spec(3, 7, 12, 64, 32, 5, 3, 2, 1, activation="relu6"),
    ],
)
def test_matches_torch_on_an_avx2_target(spec):
    _check_against_torch(spec, "heuristic", target="llvm -mcpu=haswell")


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="the host cannot run AVX2 code")
@pytest.mark.parametrize("padding", ["inline", "stage"])
def test_a_copy_with_longer_pixels_matches_torch_on_an_avx2_target(padding):
    spec = _spec(1, 13, 48, 32, 16, 17, 3, 2, 1, bias=True, activation="relu")
    _check_against_torch(spec, ConvTile(1, 4, padding, "block_rows", 16), target="llvm -mcpu=haswell")


def test_matches_torch_on_a_generic_target():
    _check_against_torch(_spec(1, 7, 12, 16, 8, 6, 3, 1, 1, bias=True, activation="relu"), "heuristic", target="llvm")


def test_dense_weight_through_the_block_sparse_kernel_is_a_dense_conv():
    rng = np.random.default_rng(3)
    spec = _spec(1, 9, 20, 32, 16, 20, 3, 1, 1, bias=True)
    weight = rng.standard_normal((32, 20, 3, 3), dtype=np.float32)
    data = rng.standard_normal(spec.data_shape, dtype=np.float32)
    bias = rng.standard_normal(32, dtype=np.float32)
    values, indices = dense_as_block_sparse(weight, 16)
    assert np.array_equal(indices, np.tile(np.arange(20, dtype=np.int32), (2, 1)))
    out = build_block_sparse_conv(spec, NATIVE, tile="heuristic")(data, values, indices, bias)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(data).permute(0, 3, 1, 2), torch.from_numpy(weight), torch.from_numpy(bias), padding=1
    ).permute(0, 2, 3, 1)
    assert np.abs(out - expected.numpy()).max() <= 1e-4 * expected.abs().max().item()


# --- packing -----------------------------------------------------------------------------------


def test_pack_unpack_round_trip_keeps_exactly_the_unmasked_blocks():
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((48, 11, 3, 3), dtype=np.float32)
    block_mask = _random_uniform_mask(rng, 3, 11, 4)
    values, indices = pack_block_sparse(weight, block_mask, 16)
    assert values.shape == (3, 4, 3, 3, 16) and values.dtype == np.float32
    assert indices.shape == (3, 4) and indices.dtype == np.int32
    assert (np.diff(indices, axis=1) > 0).all()
    assert values[1, 2, 0, 1, 5] == weight[16 + 5, indices[1, 2], 0, 1]
    masked = weight * expand_block_mask(torch.from_numpy(block_mask), weight.shape).numpy()
    assert np.array_equal(unpack_block_sparse(values, indices, 11), masked)


def test_non_uniform_mask_names_the_rows():
    block_mask = np.ones((4, 8))
    block_mask[2, 0] = 0
    block_mask[3, :3] = 0
    with pytest.raises(BlockLayoutError, match=r"block-rows 2, 3 keep \[5, 7\]") as raised:
        pack_block_sparse(np.zeros((32, 8, 1, 1), np.float32), block_mask, 8)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "weight_shape, mask_shape, N, fragment",
    [
        ((32, 8, 3, 3), (4, 8), 5, "N=5 does not divide C_out=32"),
        ((32, 8, 3, 3), (2, 8), 8, "it must be (4, 8)"),
        ((32, 8), (4, 8), 8, "4-d conv weight"),
    ],
)
def test_pack_rejects_shapes_that_do_not_fit(weight_shape, mask_shape, N, fragment):
    with pytest.raises(BlockLayoutError) as raised:
        pack_block_sparse(np.zeros(weight_shape, np.float32), np.ones(mask_shape), N)
    assert fragment in str(raised.value)


def test_kept_indices_rejects_empty_rows_and_non_binary_masks():
    with pytest.raises(BlockLayoutError, match="keeps no input channel"):
        kept_indices(np.zeros((2, 4)))
    with pytest.raises(BlockLayoutError, match="only 0 and 1"):
        kept_indices(np.full((2, 4), 0.5))


# --- tiles -------------------------------------------------------------------------------------


def test_heuristic_tiles_match_the_measured_avx2_optimum():
    """Measured on znver3 (AVX2): N=16 -> 4 pixels per tile, N=32 -> 2 pixels."""
    for width in (12, 24, 48, 56):
        for N, pixels in ((16, 4), (32, 2)):
            tile = heuristic_tile(_spec(1, width, 64, 64, N, 34, 3, 1, 1), AVX2)
            assert (tile.rows, tile.cols) == (1, pixels)


def test_heuristic_tile_on_avx512_is_wide_and_divides_the_output():
    tile = heuristic_tile(_spec(1, 56, 64, 64, 16, 34, 3, 1, 1), AVX512)
    assert (tile.rows, tile.cols) == (1, 14)
    tile = heuristic_tile(_spec(1, 7, 512, 512, 32, 272, 3, 1, 1), AVX512)
    assert (tile.rows, tile.cols) == (1, 7)


RESNET_STEM = _spec(1, 224, 3, 64, 16, 3, 7, 2, 3, bias=True, activation="relu")


def test_heuristic_tile_for_a_wide_kernel_stays_within_the_wide_kernel_cap():
    """The 7x7/2 stem: 14 AVX-512 pixels spill (see the assembly test below); 8 pixels divide
    its 112-wide output and were fastest, as 4 pixels (8 ymm accumulators) were on AVX2."""
    assert (heuristic_tile(RESNET_STEM, AVX512).rows, heuristic_tile(RESNET_STEM, AVX512).cols) == (1, 8)
    assert (heuristic_tile(RESNET_STEM, AVX2).rows, heuristic_tile(RESNET_STEM, AVX2).cols) == (1, 4)
    narrow = _spec(1, 224, 3, 64, 16, 3, 3, 2, 1)
    assert heuristic_tile(narrow, AVX512).cols == 14


def test_the_wide_kernel_cap_is_where_avx512_stops_spilling():
    target = parse_target("llvm -mcpu=skylake-avx512")
    kept = compile_block_sparse_conv(RESNET_STEM, heuristic_tile(RESNET_STEM, AVX512), target).asm_report()
    widest = compile_block_sparse_conv(RESNET_STEM, ConvTile(1, 14), target).asm_report()
    assert kept.hot_loop_spills == 0 and kept.hot_loop_vector_stores == 0
    assert widest.hot_loop_spills > 0


def test_cheapest_block_size_prefers_fewer_loads_per_fma():
    dense = _spec(1, 56, 64, 64, 16, 64, 3, 1, 1)
    assert cheapest_block_size(dense, (16, 32, 8), AVX512) == 32  # 7 px x 2 zmm beats 14 px x 1 zmm
    assert cheapest_block_size(dense, (16, 32, 8), AVX2) == 16  # 4 px x 2 ymm ties 2 px x 4 ymm: first wins
    assert (
        cheapest_block_size(_spec(1, 56, 64, 48, 16, 64, 3, 1, 1), (16, 32, 8), AVX512) == 16
    )  # 32 does not divide 48
    with pytest.raises(KernelSpecError, match="none of the block sizes"):
        cheapest_block_size(_spec(1, 8, 8, 24, 8, 8, 1, 1, 0), (16, 32), AVX512)


@pytest.mark.parametrize("isa", [AVX2, AVX512], ids=lambda isa: isa.name)
@pytest.mark.parametrize("N", [8, 16, 32])
def test_every_candidate_fits_the_registers(isa, N):
    spec = _spec(1, 7, 64, 64, N, 34, 3, 1, 1)
    candidates = tile_candidates(spec, isa)
    assert candidates
    assert all(fits_registers(spec, tile, isa) and tile.cols <= 7 and tile.rows <= 2 for tile in candidates)
    assert all(tile.pixels * max(1, N // isa.lanes) <= isa.max_accumulators for tile in candidates)
    one_row_widths = {tile.cols for tile in candidates if tile.rows == 1}
    assert one_row_widths == set(range(1, min(7, isa.max_accumulators // max(1, N // isa.lanes)) + 1))


@pytest.mark.parametrize(
    "spec, parallel",
    [
        (_spec(1, 56, 256, 64, 16, 136, 1, 1, 0), "pixels"),
        (_spec(1, 56, 64, 256, 16, 34, 1, 1, 0), "pixels"),
        (_spec(1, 28, 128, 128, 16, 68, 3, 1, 1), "block_rows"),
        (_spec(1, 7, 512, 512, 16, 272, 3, 1, 1), "block_rows"),
        # stride-2 1x1 convs read a quarter of their input: block-rows re-read only that
        (_spec(1, 14, 1024, 2048, 16, 496, 1, 2, 0), "block_rows"),
        (_spec(1, 56, 256, 512, 16, 124, 1, 2, 0), "pixels"),
    ],
)
def test_parallel_mode_streams_fewer_bytes(spec, parallel):
    assert preferred_parallel(spec) == parallel
    assert heuristic_tile(spec, AVX2).parallel == parallel
    other = next(mode for mode in ("pixels", "block_rows") if mode != parallel)
    assert streamed_bytes(spec, parallel) < streamed_bytes(spec, other)


KIB = 1024


def test_weights_beyond_the_l2_send_pixels_mode_to_block_rows_when_the_input_stays():
    """ResNet-50's 2048->512 1x1 at 7x7, 472 of 2048 kept: 967 KB of weights, 401 KB of input."""
    spec = _spec(1, 7, 2048, 512, 16, 472, 1, 1, 0)
    weights, inputs = 4 * 512 * 472, 4 * 49 * 2048
    assert reread_bytes(spec, "pixels") == weights and reread_bytes(spec, "block_rows") == inputs
    assert streamed_bytes(spec, "pixels") == 7 * weights < streamed_bytes(spec, "block_rows") == 32 * inputs
    # a 1 MiB L2 (Zen 4) keeps the input (at most half of it) but not the weights
    assert preferred_parallel(spec, 1024 * KIB) == "block_rows"
    assert heuristic_tile(spec, AVX512, l2=1024 * KIB).parallel == "block_rows"
    # a 512 KiB L2 (Zen 3) keeps neither: the fewer bytes streamed decide, as without an L2
    assert preferred_parallel(spec, 512 * KIB) == preferred_parallel(spec) == "pixels"
    # a 2 MiB L2 keeps both: a tie, decided by the bytes streamed
    assert preferred_parallel(spec, 2048 * KIB) == "pixels"


@pytest.mark.parametrize("l2", [256 * KIB, 1024 * KIB, 2048 * KIB])
def test_the_l2_leaves_the_measured_streaming_choices_alone(l2):
    """The layers whose mode was measured by bytes streamed keep it with any of these L2s; so does
    a layer whose input does not stay in the L2 while its weights do (measured: no gain)."""
    assert preferred_parallel(_spec(1, 56, 256, 64, 16, 136, 1, 1, 0), l2) == "pixels"
    assert preferred_parallel(_spec(1, 7, 512, 512, 16, 272, 3, 1, 1), l2) == "block_rows"
    assert preferred_parallel(_spec(1, 14, 1024, 2048, 16, 496, 1, 2, 0), l2) == "block_rows"
    assert preferred_parallel(_spec(1, 56, 64, 64, 16, 34, 3, 1, 1), l2) == "block_rows"  # ResNet-18 layer1


def test_vector_isa_reads_the_target_features():
    assert (AVX2.name, AVX2.lanes, AVX2.registers) == ("avx2", 8, 16)
    assert (AVX512.name, AVX512.lanes, AVX512.registers) == ("avx512", 16, 32)
    assert vector_isa(parse_target("llvm -mcpu=skylake-avx512 -mattr=-avx512f")) == AVX2
    assert vector_isa(parse_target("llvm")).lanes == 4


def test_choose_tile_times_candidates_and_caches_the_choice():
    spec = _spec(1, 14, 32, 32, 16, 16, 3, 1, 1, activation="relu")
    candidates = timing_candidates(spec, NATIVE, 3)
    assert candidates[0] == heuristic_tile(spec, NATIVE_ISA)
    assert {tile.parallel for tile in candidates} == {"block_rows", "pixels"}
    assert {tile.padding for tile in candidates} == {"inline", "stage"}
    assert {tile.pixel_pad for tile in candidates} == {0, 16} and len(set(candidates)) == len(candidates)
    tile, timings = choose_tile(spec, NATIVE)
    assert tile in timings and set(timings) <= set(candidates)
    assert timings[tile] == min(timings.values()) > 0
    assert choose_tile(spec, NATIVE) is choose_tile(spec, NATIVE)
    _check_against_torch(spec, None)


# --- assembly ----------------------------------------------------------------------------------


def test_the_column_tiles_are_unrolled_only_while_the_code_stays_small():
    """The stem at 224 px would unroll 14-28 column tiles of 49 taps (a 92 s LLVM build); it keeps
    them a loop and reads a zero-padded copy instead (no bounds checks in the hot loop)."""
    for isa in (AVX512, AVX2):
        tile = heuristic_tile(RESNET_STEM, isa)
        assert not unrolls_outer_loop(RESNET_STEM, tile, isa) and tile.padding == "stage"
    small_stem = _spec(1, 32, 3, 64, 16, 3, 7, 2, 3)
    tile = heuristic_tile(small_stem, AVX512)
    assert unrolls_outer_loop(small_stem, tile, AVX512) and tile.padding == "inline"
    for spec in RESNET_LIKE:  # the 3x3 layers keep their unrolled, inline-padded kernels
        tile = heuristic_tile(spec, AVX512)
        assert unrolls_outer_loop(spec, tile, AVX512) and tile.padding == "inline"


def test_kernel_code_stops_growing_with_the_image_width():
    target = parse_target("llvm -mcpu=skylake-avx512")
    tile = heuristic_tile(RESNET_STEM, AVX512)  # the same tile at both widths: only the width differs
    sizes = {}
    for width in (224, 448):
        spec = _spec(1, width, 3, 64, 16, 3, 7, 2, 3, bias=True, activation="relu")
        kernel = compile_block_sparse_conv(spec, tile, target)
        report = kernel.asm_report()
        assert report.hot_loop_spills == 0 and report.widest_fma_bits == 512
        sizes[width] = len(kernel.asm())
    assert sizes[448] < 1.2 * sizes[224], sizes


RESNET_LIKE = [
    _spec(1, 56, 64, 64, 16, 34, 3, 1, 1, bias=True, activation="relu"),
    _spec(1, 7, 512, 512, 16, 272, 3, 1, 1, bias=True, residual=True, activation="relu"),
    _spec(1, 28, 128, 128, 32, 68, 3, 1, 1, bias=True, activation="relu"),
]


@pytest.mark.parametrize("spec", RESNET_LIKE, ids=lambda spec: f"{spec.in_channels}x{spec.width}-N{spec.block_size}")
@pytest.mark.parametrize("target", ["llvm -mcpu=native", "llvm -mcpu=znver3"])
def test_heuristic_tile_uses_vector_fma_and_keeps_accumulators_in_registers(spec, target):
    target = parse_target(target)
    kernel = compile_block_sparse_conv(spec, heuristic_tile(spec, vector_isa(target)), target)
    report = kernel.asm_report()
    assert report.widest_fma_bits == 32 * vector_isa(target).lanes
    assert report.hot_loop_spills == 0
    assert report.hot_loop_vector_stores == 0


# Cross-compiled for a named CPU, whatever the host is (TVM compiles for any x86 CPU LLVM knows; it
# only cannot run the code): the AVX-512 hot loops are checked on an AVX2 host too, and the AVX2
# ones on an AVX-512 host. (target, vector ISA the target must select, FMA width in bits.)
CROSS_TARGETS = [
    ("llvm -mcpu=skylake-avx512", "avx512", 512),
    ("llvm -mcpu=znver4", "avx512", 512),
    ("llvm -mcpu=haswell", "avx2", 256),
    ("llvm -mcpu=znver3", "avx2", 256),
]
# The production layer kinds, each with the tile the whole-model lowering gives it on every ISA:
# a 3x3 conv parallel over block-rows with a fused residual, a 1x1 conv at 56x56 parallel over
# pixels (ResNet-50 1.0G: K = 59 of 256), and N=32 blocks.
CROSS_SPECS = [
    _spec(1, 7, 512, 512, 16, 272, 3, 1, 1, bias=True, residual=True, activation="relu"),
    _spec(1, 56, 256, 64, 16, 59, 1, 1, 0, bias=True, activation="relu"),
    _spec(1, 14, 256, 256, 32, 136, 3, 1, 1, bias=True, activation="relu"),
]


@pytest.mark.parametrize(
    "spec",
    CROSS_SPECS,
    ids=lambda spec: f"{spec.kernel_size[0]}x{spec.kernel_size[1]}-{spec.in_channels}x{spec.width}-N{spec.block_size}",
)
@pytest.mark.parametrize("target, isa_name, bits", CROSS_TARGETS, ids=[case[0].split("=")[1] for case in CROSS_TARGETS])
def test_every_hot_loop_fma_is_full_width_on_a_named_cpu(spec, target, isa_name, bits):
    target = parse_target(target)
    isa = vector_isa(target)
    assert (isa.name, 32 * isa.lanes) == (isa_name, bits)  # the target is read, not the host
    tile = heuristic_tile(spec, isa)
    report = compile_block_sparse_conv(spec, tile, target).asm_report()
    hot_loops = report.hot_loops()
    assert len(hot_loops) == 1, f"expected one kernel hot loop, got {hot_loops}"
    (loop,) = hot_loops
    # Every FMA of the hot loop (and of the whole kernel: N is a multiple of the lanes) is a
    # packed FMA on full-width registers: zmm on AVX-512, ymm on AVX2; none split in halves.
    assert dict(loop.packed_fma_by_bits).keys() == {bits}, dict(loop.packed_fma_by_bits)
    assert report.packed_fma_by_bits.keys() == {bits}, dict(report.packed_fma_by_bits)
    # ... and every accumulator of the register tile is updated in it, from registers: no
    # spill or reload, no vector store (the partial sums are written once, after the loop).
    assert loop.packed_fmas >= tile.pixels * spec.block_size // isa.lanes
    assert (loop.stack_vector_accesses, loop.vector_stores) == (0, 0)


def test_the_spill_check_sees_a_tile_too_big_for_avx2():
    spec = RESNET_LIKE[0]
    kernel = compile_block_sparse_conv(spec, ConvTile(1, 12), parse_target("llvm -mcpu=znver3"))
    assert kernel.asm_report().hot_loop_spills > 0


def test_asm_analysis_on_a_hand_written_loop():
    text = "\n".join(
        [
            "\t.type\tf,@function",
            "f:",
            ".LBB0_1:",
            "\tvbroadcastss\t(%rax), %ymm2",
            "\tvfmadd231ps\t%ymm1, %ymm2, %ymm0",
            "\tvfmadd231ps\t(%rcx){1to16}, %zmm3, %zmm4",
            "\tvmovups\t%ymm0, 32(%rsp)",
            "\tjne\t.LBB0_1",
            "\tvmovups\t%ymm0, (%rdi)",
            "\tretq",
        ]
    )
    report = analyse_asm(text)
    (loop,) = report.hot_loops()
    assert dict(loop.packed_fma_by_bits) == {256: 1, 512: 1}
    assert report.hot_loop_spills == 1 and report.hot_loop_vector_stores == 1


# --- spec and call validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (dict(out_channels=40, block_size=16), "N=16 does not divide out_channels=40"),
        (dict(kept_per_row=9), "K=9 exceeds in_channels=8"),
        (dict(activation="elu"), "activation must be one of none, relu, relu6"),
        (dict(kernel_size=9), "does not fit a 7x7 input"),
        (dict(stride=0), "stride must be an integer >= 1"),
        (dict(batch=0), "batch must be an integer >= 1"),
    ],
)
def test_spec_errors_name_the_input(arguments, fragment):
    base = dict(batch=1, height=7, width=7, in_channels=8, out_channels=32, block_size=16, kept_per_row=4)
    with pytest.raises(KernelSpecError) as raised:
        BlockSparseConvSpec(**{**base, **arguments})
    assert fragment in str(raised.value)


@pytest.mark.parametrize("tile, fragment", [(ConvTile, "rows must be"), ("big", "tile must be a ConvTile")])
def test_bad_tiles(tile, fragment):
    spec = _spec(1, 7, 8, 16, 16, 4, 3, 1, 1)
    with pytest.raises(KernelSpecError, match=fragment):
        build_block_sparse_conv(spec, NATIVE, tile=tile(0, 2) if tile is ConvTile else tile)
    with pytest.raises(KernelSpecError, match="padding must be one of inline, stage"):
        ConvTile(1, 2, "halo")
    with pytest.raises(KernelSpecError, match="parallel must be one of block_rows, pixels"):
        ConvTile(1, 2, "inline", "channels")
    with pytest.raises(KernelSpecError, match="pixel_pad must be an integer >= 0"):
        ConvTile(1, 2, "stage", pixel_pad=-16)


def test_call_errors_name_the_argument():
    spec = _spec(1, 7, 8, 16, 16, 4, 3, 1, 1, bias=True)
    kernel = build_block_sparse_conv(spec, NATIVE, tile="heuristic")
    data = np.zeros(spec.data_shape, np.float32)
    values = np.zeros(spec.values_shape, np.float32)
    indices = np.zeros(spec.indices_shape, np.int32)
    bias = np.zeros(16, np.float32)
    with pytest.raises(
        KernelSpecError, match=r"values has shape \(1, 4, 3, 3, 8\); this kernel needs \(1, 4, 3, 3, 16\)"
    ):
        kernel(data, np.zeros((1, 4, 3, 3, 8), np.float32), indices, bias)
    with pytest.raises(KernelSpecError, match="bias is missing"):
        kernel(data, values, indices)
    with pytest.raises(KernelSpecError, match="residual given but the kernel was built without it"):
        kernel(data, values, indices, bias, residual=np.zeros(spec.out_shape, np.float32))
    with pytest.raises(KernelSpecError, match=r"indices must lie in \[0, in_channels=8\)"):
        kernel(data, values, indices + 8, bias)
