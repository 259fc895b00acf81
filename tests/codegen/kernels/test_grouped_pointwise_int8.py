"""The grouped int8 1x1 kernel (``kernels.grouped_pointwise_int8``) against the numpy int64 reference
of the int8 formula, its weight layout, where it applies, its assembly, and its refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels import grouped_pointwise_int8 as g8  # noqa: E402
from subp_fx.codegen.kernels.int8_spec import Int8ConvSpec  # noqa: E402
from subp_fx.codegen.kernels.isa import int8_path  # noqa: E402
from subp_fx.codegen.kernels.modes import PARALLEL_BLOCK_ROWS, PARALLEL_PIXELS  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tuning.asm import analyse_asm  # noqa: E402
from tests.codegen.kernels.test_block_sparse_conv_int8 import (  # noqa: E402
    OUT_PARAMS,
    _accumulators,
    _epilogue,
)
from tests.codegen.kernels.test_block_sparse_conv_int8 import _arguments as general_arguments  # noqa: E402

ICELAKE = parse_target("llvm -mcpu=icelake-server")
VNNI = int8_path(ICELAKE)
SKYLAKE_PATH = int8_path(parse_target("llvm -mcpu=skylake-avx512"))  # AVX-512 without VNNI
HOST_RUNS_VNNI = int8_path(parse_target("llvm -mcpu=native")).name == VNNI.name
needs_vnni_host = pytest.mark.skipif(not HOST_RUNS_VNNI, reason="the host has no AVX-512 VNNI")


def _spec(height=5, width=7, c_in=64, c_out=32, kept_groups=8, stride=1, batch=1, **rest):
    return Int8ConvSpec(batch, height, width, c_in, c_out, 16, kept_groups, 1, stride, 0, **rest)


def _run_starts(rng, spec: Int8ConvSpec) -> np.ndarray:
    """(R, Kg) first channels of kept groups that make whole aligned runs of 16, ascending."""
    runs = [
        np.sort(rng.choice(spec.in_channels // 16, spec.kept_groups // 4, replace=False))
        for _ in range(spec.block_rows)
    ]
    return (np.stack(runs)[:, :, None] * 16 + 4 * np.arange(4)).reshape(spec.block_rows, -1).astype(np.int32)


def _arguments(spec: Int8ConvSpec, seed: int, unit_scale: bool = False) -> dict[str, np.ndarray]:
    """The general int8 kernel's arguments (values (R, Kg, 1, 1, 16, 4), group starts (R, Kg)),
    the kept groups making whole runs of 16."""
    arrays = general_arguments(spec, seed, unit_scale)
    arrays["group_starts"] = _run_starts(np.random.default_rng(seed), spec)
    return arrays


def _run(spec: Int8ConvSpec, arrays, parallel=None) -> np.ndarray:
    func = g8.grouped_pointwise_int8_primfunc(spec, VNNI, parallel).with_attr("global_symbol", "conv")
    lib = tvm.compile(tvm.IRModule({"conv": func}), target=ICELAKE)
    packed = dict(arrays, values=g8.pack_values(arrays["values"]), group_starts=g8.kept_runs(arrays["group_starts"]))
    tensors = [tvm.runtime.tensor(packed[name]) for name in g8.argument_shapes(spec) if name != "out"]
    out = tvm.runtime.empty(spec.out_shape, spec.out_dtype)
    lib["conv"](*tensors, out)
    return out.numpy()


# Batch 2 across tiles (35 pixels a map: the last tile of 6 runs into the second image), stride 2,
# a 7x7 map (49 pixels: 8 tiles and 1 left), Kg = 4 (one run) to 16, both residuals, relu / relu6,
# zero points 0 and 128, float32 and uint8 outputs.
CASES = [
    _spec(batch=2, input_zero_point=128, residual="uint8", activation="relu", out_dtype="uint8"),
    _spec(height=9, width=7, c_in=32, kept_groups=4, stride=2, residual="float32", activation="relu6"),
    _spec(height=7, width=7, c_in=128, c_out=48, kept_groups=16, input_zero_point=3, out_dtype="uint8"),
]


@needs_vnni_host
@pytest.mark.parametrize("spec", CASES, ids=lambda spec: f"b{spec.batch}s{spec.stride[0]}Kg{spec.kept_groups}")
@pytest.mark.parametrize("parallel", [PARALLEL_PIXELS, PARALLEL_BLOCK_ROWS])
def test_matches_the_int64_reference(spec, parallel):
    arrays = _arguments(spec, seed=1)
    out = _run(spec, arrays, parallel)
    y = _epilogue(spec, arrays, _accumulators(spec, arrays))
    if spec.out_dtype == "float32":
        ulp = np.finfo(np.float32).eps * max(1.0, float(np.abs(y).max()))
        np.testing.assert_allclose(out, y, rtol=0, atol=4 * ulp)
        return
    ratio = y * (np.float32(1) / np.float32(OUT_PARAMS[0]))
    expected = np.clip(np.rint(ratio) + OUT_PARAMS[1], 0, 255).astype(np.int64)
    tie = np.abs(np.abs(ratio - np.floor(ratio)) - 0.5) < 1e-3
    difference = np.abs(out.astype(np.int64) - expected)
    assert difference[~tie].max(initial=0) == 0 and difference.max(initial=0) <= 1
    assert 0 < out.mean() < 255  # not everything clamped


@needs_vnni_host
def test_int32_accumulation_is_exact():
    spec = _spec(height=3, width=5, c_in=256, kept_groups=64)
    arrays = _arguments(spec, seed=2, unit_scale=True)
    acc = _accumulators(spec, arrays)
    assert np.abs(acc).max() < 2**24  # float32(acc) is then exact
    np.testing.assert_array_equal(_run(spec, arrays), acc.astype(np.float32))


def test_pack_values_puts_output_4o_plus_q_in_vector_q_lane_4o_plus_c():
    values = np.random.default_rng(3).integers(-128, 128, (2, 8, 1, 1, 16, 4), dtype=np.int8)
    packed = g8.pack_values(values)
    assert packed.shape == (2, 2, 4, 16, 4)
    for r, s, q, o, c in [(0, 0, 0, 0, 0), (1, 1, 3, 2, 1), (0, 1, 2, 3, 3), (1, 0, 1, 1, 2)]:
        np.testing.assert_array_equal(packed[r, s, q, 4 * o + c], values[r, 4 * s + c, 0, 0, 4 * o + q])


def test_kept_runs_accepts_only_whole_aligned_runs_of_16():
    runs = np.array([[0, 4, 8, 12, 32, 36, 40, 44]], np.int32)
    np.testing.assert_array_equal(g8.kept_runs(runs), [[0, 32]])
    assert g8.kept_runs(runs[:, :6]) is None  # not whole runs
    assert g8.kept_runs(runs + 4) is None  # runs not aligned to 16
    assert g8.kept_runs(np.array([[0, 4, 8, 16]], np.int32)) is None  # a gap inside a run


def test_applies_where_it_was_measured_faster_on_vnni():
    spec = _spec(c_in=256, kept_groups=g8.MIN_KEPT_GROUPS)
    starts = _run_starts(np.random.default_rng(4), spec)
    assert g8.applies(spec, starts, VNNI)
    assert not g8.applies(spec, starts, SKYLAKE_PATH)  # no VNNI: the pmaddwd path
    assert not g8.applies(dataclasses.replace(spec, stride=2), starts, VNNI)
    shorter = dataclasses.replace(spec, kept_groups=g8.MIN_KEPT_GROUPS - 4)
    assert not g8.applies(shorter, starts[:, :-4], VNNI)
    groups = np.tile(np.arange(0, 4 * g8.MIN_KEPT_GROUPS, 4, dtype=np.int32) + 4, (2, 1))  # runs off by a group
    assert not g8.applies(spec, groups, VNNI)
    three = dataclasses.replace(spec, kernel_size=3, padding=1)
    assert not g8.applies(three, starts, VNNI)


def test_hot_loop_broadcasts_one_run_per_four_dot_products():
    spec = _spec(height=14, width=14, c_in=1024, c_out=64, kept_groups=128, out_dtype="uint8", activation="relu")
    func = g8.grouped_pointwise_int8_primfunc(spec, VNNI).with_attr("global_symbol", "conv")
    asm = tvm.compile(tvm.IRModule({"conv": func}), target=ICELAKE).mod.inspect_source("asm")
    assert not analyse_asm(asm).hot_loop_spills
    assert asm.count("vbroadcasti32x4") >= g8.TILE_PIXELS
    assert asm.count("vpdpbusd") >= 4 * g8.TILE_PIXELS
    assert "TVMBackendAllocWorkspace" not in asm and "memset" not in asm


@pytest.mark.parametrize(
    "spec, path, message",
    [
        (Int8ConvSpec(1, 5, 5, 64, 32, 16, 8, 3, 1, 1), VNNI, "1x1 kernel without padding"),
        (Int8ConvSpec(1, 5, 5, 64, 64, 32, 8, 1, 1, 0), VNNI, "N=16"),
        (Int8ConvSpec(1, 5, 5, 64, 32, 16, 6, 1, 1, 0), VNNI, "kept groups a multiple of 4"),
        (_spec(), SKYLAKE_PATH, "VNNI on 16 int32 lanes"),
    ],
)
def test_refuses_specs_and_paths_it_cannot_run(spec, path, message):
    with pytest.raises(KernelSpecError, match=message):
        g8.grouped_pointwise_int8_primfunc(spec, path)


def test_refuses_unknown_parallel_mode():
    with pytest.raises(KernelSpecError, match="parallel must be one of"):
        g8.grouped_pointwise_int8_primfunc(_spec(), VNNI, "rows")


def test_block_rows_go_outer_only_when_the_weights_outgrow_l2():
    small = _spec(c_in=1024, c_out=256, kept_groups=128)  # 128 KiB of int8 weights
    large = _spec(c_in=2048, c_out=512, kept_groups=248)  # 496 KiB: ResNet-50 layer4 at G=16
    assert g8.parallel_mode(small) == PARALLEL_PIXELS
    assert g8.parallel_mode(large) == PARALLEL_BLOCK_ROWS
