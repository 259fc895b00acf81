"""The grouped 1x1 kernel (kept channels in aligned groups of 4) against numpy, its weight packing,
where it applies, its assembly, and the specs it refuses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels import grouped_pointwise as gp  # noqa: E402
from subp_fx.codegen.kernels.isa import vector_isa  # noqa: E402
from subp_fx.codegen.kernels.modes import PARALLEL_BLOCK_ROWS, PARALLEL_PIXELS  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tuning.asm import analyse_asm  # noqa: E402

SKYLAKE = parse_target("llvm -mcpu=skylake-avx512")
HASWELL = parse_target("llvm -mcpu=haswell")
HOST_RUNS_AVX512 = vector_isa(parse_target("llvm -mcpu=native")).lanes == 16
needs_avx512_host = pytest.mark.skipif(not HOST_RUNS_AVX512, reason="the host cannot run AVX-512 code")


def _spec(height=5, width=7, c_in=12, c_out=32, kept=8, stride=1, batch=1, **epilogue):
    return BlockSparseConvSpec(batch, height, width, c_in, c_out, 16, kept, 1, stride, 0, **epilogue)


def _grouped_indices(rng, spec):
    groups = [
        np.sort(rng.choice(spec.in_channels // 4, spec.kept_per_row // 4, replace=False))
        for _ in range(spec.block_rows)
    ]
    return (np.stack(groups)[:, :, None] * 4 + np.arange(4)).reshape(spec.block_rows, -1).astype(np.int32)


def _case(spec, seed=0):
    """(arguments for the kernel, expected output) for ``spec`` with random grouped weights."""
    rng = np.random.default_rng(seed)
    indices = _grouped_indices(rng, spec)
    values = rng.standard_normal(spec.values_shape).astype(np.float32)
    x = rng.standard_normal(spec.data_shape).astype(np.float32)
    weight = np.zeros((spec.out_channels, spec.in_channels), np.float32)
    for r in range(spec.block_rows):
        weight[r * 16 : (r + 1) * 16, indices[r]] = values[r, :, 0, 0, :].T
    sh, sw = spec.stride
    expected = x[:, ::sh, ::sw, :] @ weight.T
    arguments = [x, gp.pack_values(values), gp.kept_groups(indices)]
    if spec.bias:
        bias = rng.standard_normal(spec.out_channels).astype(np.float32)
        arguments.append(bias)
        expected = expected + bias
    if spec.residual:
        residual = rng.standard_normal(spec.out_shape).astype(np.float32)
        arguments.append(residual)
        expected = expected + residual
    expected = {
        "none": lambda v: v,
        "relu": lambda v: np.maximum(v, 0),
        "relu6": lambda v: np.clip(v, 0, 6),
        "silu": lambda v: v / (1 + np.exp(-v)),
    }[spec.activation](expected)
    return arguments, expected.astype(np.float32)


def _run(spec, parallel=None, seed=0):
    func = gp.grouped_pointwise_primfunc(spec, parallel).with_attr("global_symbol", "conv")
    module = tvm.compile(tvm.IRModule({"conv": func}), target=SKYLAKE)
    arguments, expected = _case(spec, seed)
    tensors = [tvm.runtime.tensor(a) for a in arguments] + [tvm.runtime.empty(spec.out_shape, "float32")]
    module["conv"](*tensors)
    return tensors[-1].numpy(), expected


@needs_avx512_host
@pytest.mark.parametrize(
    "spec",
    [
        _spec(),  # 35 pixels: 5 whole tiles of 6 and one of 5
        _spec(height=2, width=3),  # 6 pixels: one whole tile
        _spec(height=1, width=4),  # 4 pixels: only a partial tile
        _spec(height=7, width=7, stride=2),  # 4x4 output read from every other pixel
        _spec(batch=2, height=3, width=3),  # tiles cross the batch boundary
        _spec(c_in=64, kept=64, bias=True, residual=True, activation="relu"),  # dense, full epilogue
        _spec(bias=True, activation="relu6"),
        _spec(bias=True, residual=True, activation="silu"),  # an activation that binds a scalar
    ],
    ids=["remainder", "one-tile", "partial-only", "stride2", "batch2", "dense-epilogue", "relu6", "silu"],
)
@pytest.mark.parametrize("parallel", [PARALLEL_PIXELS, PARALLEL_BLOCK_ROWS])
def test_matches_numpy(spec, parallel):
    out, expected = _run(spec, parallel)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_pack_values_puts_output_4q_plus_o_in_accumulator_q_lane_4o_plus_c():
    values = np.arange(2 * 8 * 16, dtype=np.float32).reshape(2, 8, 1, 1, 16)  # value = (r*8 + k)*16 + output
    packed = gp.pack_values(values)
    assert packed.shape == (2, 2, 4, 16)
    r, group, q, o, c = 1, 1, 2, 3, 1  # output 4*3+2 = 14 on the group's channel 1 (k = 5)
    assert packed[r, group, q, 4 * o + c] == (r * 8 + 4 * group + c) * 16 + (4 * o + q)


def test_kept_groups_accepts_only_whole_aligned_groups():
    whole = np.array([[4, 5, 6, 7, 12, 13, 14, 15]], np.int32)
    np.testing.assert_array_equal(gp.kept_groups(whole), [[4, 12]])
    assert gp.kept_groups(np.array([[1, 2, 3, 4]], np.int32)) is None  # a group off the 4-alignment
    assert gp.kept_groups(np.array([[0, 1, 2, 5]], np.int32)) is None  # a partial group
    assert gp.kept_groups(np.array([[0, 1, 2, 3, 4, 5]], np.int32)) is None  # K not a multiple of 4


def test_applies_only_to_16_lane_1x1_unpadded_n16_grouped():
    spec = _spec()
    indices = _grouped_indices(np.random.default_rng(0), spec)
    avx512, avx2 = vector_isa(SKYLAKE), vector_isa(HASWELL)
    assert gp.applies(spec, indices, avx512)
    assert not gp.applies(spec, indices, avx2)  # 8 lanes: no useful tile
    assert not gp.applies(spec, np.tile(np.arange(1, 9, dtype=np.int32), (2, 1)), avx512)  # arbitrary channels
    three = dataclasses.replace(spec, kernel_size=3, padding=1)
    assert not gp.applies(three, indices, avx512)
    assert not gp.applies(dataclasses.replace(spec, out_channels=64, block_size=32), indices[:2], avx512)


def test_hot_loop_broadcasts_one_group_per_four_fmas():
    spec = _spec(height=14, width=14, c_in=256, c_out=64, kept=128)
    func = gp.grouped_pointwise_primfunc(spec).with_attr("global_symbol", "conv")
    asm = tvm.compile(tvm.IRModule({"conv": func}), target=SKYLAKE).mod.inspect_source("asm")
    report = analyse_asm(asm)
    assert not report.hot_loop_spills
    assert asm.count("vbroadcastf32x4") >= gp.TILE_PIXELS
    # The accumulators stay on the stack (no workspace call, no memset per tile).
    assert "TVMBackendAllocWorkspace" not in asm and "memset" not in asm


@pytest.mark.parametrize(
    "spec, message",
    [
        (BlockSparseConvSpec(1, 5, 5, 12, 32, 16, 8, 3, 1, 1), "1x1 kernel without padding"),
        (BlockSparseConvSpec(1, 5, 5, 12, 64, 32, 8, 1, 1, 0), "N=16"),
        (BlockSparseConvSpec(1, 5, 5, 12, 32, 16, 6, 1, 1, 0), "K a multiple of 4"),
    ],
)
def test_refuses_specs_it_cannot_run(spec, message):
    with pytest.raises(KernelSpecError, match=message):
        gp.grouped_pointwise_primfunc(spec)


def test_refuses_unknown_parallel_mode():
    with pytest.raises(KernelSpecError, match="parallel must be one of"):
        gp.grouped_pointwise_primfunc(_spec(), "rows")


def test_narrow_block_rows_keeps_every_output_channel_in_place():
    rng = np.random.default_rng(4)
    values = rng.standard_normal((3, 8, 1, 1, 32)).astype(np.float32)
    indices = np.sort(rng.choice(64, (3, 8)), axis=1).astype(np.int32)
    narrow_values, narrow_indices = gp.narrow_block_rows(values, indices)
    assert narrow_values.shape == (6, 8, 1, 1, 16) and narrow_indices.shape == (6, 8)

    def dense(values, indices):
        rows, _, _, _, n = values.shape
        weight = np.zeros((rows * n, 64), np.float32)
        for r in range(rows):
            weight[r * n : (r + 1) * n, indices[r]] = values[r, :, 0, 0, :].T
        return weight

    np.testing.assert_array_equal(dense(narrow_values, narrow_indices), dense(values, indices))
    with pytest.raises(KernelSpecError, match="not a multiple of 16"):
        gp.narrow_block_rows(values[..., :24], indices)


def test_block_rows_go_outer_only_when_the_weights_outgrow_l2():
    small = BlockSparseConvSpec(1, 28, 28, 512, 128, 16, 256, 1, 1, 0)  # 128 KiB of weights
    large = BlockSparseConvSpec(1, 14, 14, 1024, 256, 16, 1024, 1, 1, 0)  # 1 MiB
    assert gp.parallel_mode(small) == PARALLEL_PIXELS
    assert gp.parallel_mode(large) == PARALLEL_BLOCK_ROWS
