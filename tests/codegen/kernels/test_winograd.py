"""The Winograd F(m x m, 3 x 3) block-sparse kernel: its transforms, where it applies, its tile,
and its output against a float64 torch conv on small shapes (AVX2 code on any host, AVX-512 code
where the host runs it)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels import winograd  # noqa: E402
from subp_fx.codegen.kernels.isa import vector_isa  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tir_passes.pipeline import tir_pipeline  # noqa: E402

ZEN4 = parse_target("llvm -mcpu=znver4")
HASWELL = parse_target("llvm -mcpu=haswell")
HOST_RUNS_AVX512 = vector_isa(parse_target("llvm -mcpu=native")).lanes == 16
# F(4, 3) rounds differently from a direct sum: ~1e-6 of the output's scale on these shapes.
RELATIVE_TOLERANCE = 2e-5


def _spec(batch=1, height=8, width=8, c_in=16, c_out=32, N=16, kept=5, padding=1, **epilogue):
    return BlockSparseConvSpec(batch, height, width, c_in, c_out, N, kept, 3, 1, padding, **epilogue)


@pytest.mark.parametrize("m", winograd.OUTPUT_TILES)
def test_the_transforms_compute_a_1d_correlation(m):
    """A^T [(G g) . (B^T d)] is the valid correlation of d (alpha values) with g (3 taps)."""
    matrices = winograd.winograd_matrices(m)
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(matrices.alpha), rng.standard_normal(3)
    expected = np.array([d[i : i + 3] @ g for i in range(m)])
    np.testing.assert_allclose(matrices.AT @ ((matrices.G @ g) * (matrices.BT @ d)), expected, atol=1e-12)


def test_transformed_weights_keep_pruned_blocks_zero():
    """G g G^T of a zero kernel is zero: the 1xN sparsity survives the transform."""
    rng = np.random.default_rng(1)
    values = rng.standard_normal((2, 3, 3, 3, 16)).astype(np.float32)
    values[1, 2] = 0.0
    transformed = winograd.transform_values(values, 4)
    assert transformed.shape == (6, 6, 2, 3, 16) == winograd.values_shape(_spec(c_out=32, kept=3), 4)
    assert not transformed[:, :, 1, 2].any() and transformed[:, :, 1, 1].any()
    with pytest.raises(KernelSpecError, match=r"\(R, K, 3, 3, N\)"):
        winograd.transform_values(values[:, :, :1], 4)


def test_problem_names_what_the_kernel_does_not_run():
    assert winograd.problem(_spec()) is None
    one_by_one = BlockSparseConvSpec(1, 8, 8, 16, 32, 16, 5, 1, 1, 0)
    assert "3x3 kernels only" in winograd.problem(one_by_one)
    strided = BlockSparseConvSpec(1, 16, 16, 16, 32, 16, 5, 3, 2, 1)
    assert "stride 1 only" in winograd.problem(strided)
    assert winograd.why_direct(strided) == winograd.problem(strided)
    small = _spec(height=7, width=7)  # 2 x 2 tiles of 4 x 4: the kernel runs it, a build does not
    assert winograd.problem(small) is None and f"from {winograd.MIN_TILES}" in winograd.why_direct(small)
    assert winograd.why_direct(_spec(batch=4, height=7, width=7, kept=12)) is None  # 16 tiles over the batch
    few_kept = _spec(height=16, width=16, kept=winograd.MIN_KEPT - 1)
    assert winograd.problem(few_kept) is None and f"from K={winograd.MIN_KEPT}" in winograd.why_direct(few_kept)


def test_kernel_spec_runs_wide_blocks_as_rows_of_16():
    assert winograd.kernel_spec(_spec(N=32)).block_size == 16
    assert winograd.kernel_spec(_spec(N=8)).block_size == 8
    assert winograd.kernel_spec(_spec(N=16)) == _spec(N=16)


def test_heuristic_tile_fits_the_registers_and_counts_the_gemm():
    for target in (ZEN4, HASWELL):
        isa = vector_isa(target)
        spec = _spec(height=56, width=56)
        tile = winograd.heuristic_tile(spec, isa)
        assert tile.m == winograd.DEFAULT_OUTPUT_TILE
        assert 1 <= tile.cols * (16 // min(16, isa.lanes)) <= isa.max_accumulators
    tile = winograd.heuristic_tile(_spec(height=56, width=56), vector_isa(ZEN4))
    assert tile.cols == 14  # 196 tiles: 14 divides them, no padded tile
    assert winograd.tile_grid(_spec(height=56, width=56), tile).padded_tiles == 196
    assert winograd.gemm_macs(_spec(height=56, width=56), 4) == 36 * 196 * 32 * 5
    with pytest.raises(KernelSpecError, match="WinogradTile.m"):
        winograd.WinogradTile(3, 4)
    with pytest.raises(KernelSpecError, match="WinogradTile.cols"):
        winograd.WinogradTile(4, 0)


def test_the_kernel_refuses_a_conv_it_does_not_run():
    with pytest.raises(KernelSpecError, match="3x3 kernels only"):
        winograd.winograd_conv2d_primfunc(
            BlockSparseConvSpec(1, 8, 8, 16, 32, 16, 5, 1, 1, 0), winograd.WinogradTile(4, 4), vector_isa(ZEN4)
        )
    with pytest.raises(KernelSpecError, match="WinogradTile"):
        winograd.winograd_conv2d_primfunc(_spec(), (4, 4), vector_isa(ZEN4))


def _run(spec: BlockSparseConvSpec, tile: winograd.WinogradTile, target, seed=0):
    """(kernel output, float64 torch conv of the same weights)."""
    rng = np.random.default_rng(seed)
    N, R, K = spec.block_size, spec.block_rows, spec.kept_per_row
    values = rng.standard_normal((R, K, 3, 3, N)).astype(np.float32)
    indices = np.stack([np.sort(rng.choice(spec.in_channels, K, replace=False)) for _ in range(R)]).astype(np.int32)
    x = rng.standard_normal(spec.data_shape).astype(np.float32)
    weight = np.zeros((spec.out_channels, spec.in_channels, 3, 3))
    for r in range(R):
        weight[r * N : (r + 1) * N, indices[r]] = values[r].transpose(3, 0, 1, 2)
    bias = rng.standard_normal(spec.out_channels).astype(np.float32)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)).double(),
        torch.from_numpy(weight),
        torch.from_numpy(bias).double() if spec.bias else None,
        padding=spec.padding,
    )
    expected = expected.numpy().transpose(0, 2, 3, 1)
    arguments = [x, winograd.transform_values(values, tile.m), indices]
    arguments += [bias] if spec.bias else []
    if spec.residual:
        residual = rng.standard_normal(spec.out_shape).astype(np.float32)
        arguments.append(residual)
        expected = expected + residual
    expected = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6)}[
        spec.activation
    ](expected)
    func = winograd.winograd_conv2d_primfunc(spec, tile, vector_isa(target)).with_attr("global_symbol", "kernel")
    module = tvm.compile(tvm.IRModule({"kernel": func}), target=target, tir_pipeline=tir_pipeline(target, 2)).jit()
    tensors = [tvm.runtime.tensor(array) for array in arguments] + [tvm.runtime.empty(spec.out_shape, "float32")]
    module["kernel"](*tensors)
    return tensors[-1].numpy(), expected


CASES = {
    "8x8": _spec(),
    "batch2-7x9-n8-residual-relu": _spec(
        batch=2, height=7, width=9, c_in=24, c_out=16, N=8, kept=7, bias=True, residual=True, activation="relu"
    ),
    "unpadded-relu6": _spec(height=10, width=10, c_in=8, kept=8, padding=0, bias=True, activation="relu6"),
    "c_in-not-a-lane-multiple": _spec(height=9, width=6, c_in=12, c_out=16, kept=4, bias=True),
}


@pytest.mark.parametrize("m", winograd.OUTPUT_TILES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("target", [HASWELL, ZEN4], ids=["avx2", "avx512"])
def test_matches_a_float64_conv(target, case, m):
    if target is ZEN4 and not HOST_RUNS_AVX512:
        pytest.skip("the host cannot run AVX-512 code")
    spec = CASES[case]
    tile = winograd.heuristic_tile(spec, vector_isa(target), m)
    got, expected = _run(spec, tile, target)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())


def test_padded_register_tiles_do_not_change_the_output():
    """A GEMM tile that does not divide the tiles (25 tiles in tiles of 4) computes extra rows
    from the last real tile; the output is the same as with a tile that divides them."""
    spec = _spec(height=10, width=10, kept=6, bias=True)  # 3 x 3 tiles of 4: 9 tiles
    target = HASWELL
    divides, _ = _run(spec, winograd.WinogradTile(4, 3), target)
    padded, expected = _run(spec, winograd.WinogradTile(4, 4), target)
    np.testing.assert_array_equal(divides, padded)
    np.testing.assert_allclose(padded, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())
