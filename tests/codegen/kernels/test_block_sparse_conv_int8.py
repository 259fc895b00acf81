"""The int8 block-sparse conv kernel against a numpy int64 reference, on every dot-product path
this host can run (VNNI, AVX-512 and AVX2 pmaddwd, generic int32), its assembly, its spec."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels.block_sparse_conv_int8 import (  # noqa: E402
    block_sparse_conv2d_int8_primfunc,
    int8_heuristic_tile,
    kernel_values,
)
from subp_fx.codegen.kernels.int8_spec import Int8ConvSpec  # noqa: E402
from subp_fx.codegen.kernels.isa import int8_path  # noqa: E402
from subp_fx.codegen.kernels.spec import ConvTile  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tuning.asm import analyse_asm  # noqa: E402

ICELAKE = parse_target("llvm -mcpu=icelake-server")
SKYLAKE = parse_target("llvm -mcpu=skylake-avx512")
HASWELL = parse_target("llvm -mcpu=haswell")
GENERIC = parse_target("llvm -mcpu=x86-64")
ALDERLAKE = parse_target("llvm -mcpu=alderlake")
HOST_PATH = int8_path(parse_target("llvm -mcpu=native")).name
RUNNABLE = {"avx512-vnni": (ICELAKE, SKYLAKE, HASWELL), "avx512-pmaddwd": (SKYLAKE, HASWELL)}.get(HOST_PATH, ())
RESIDUAL_PARAMS = np.array([0.05, 100.0], np.float32)
OUT_PARAMS = np.array([0.1, 7.0], np.float32)


def _build(spec, target, tile=None):
    func = block_sparse_conv2d_int8_primfunc(spec, tile, target).with_attr("global_symbol", "conv")
    return tvm.compile(tvm.IRModule({"conv": func}), target=target)


def _arguments(spec: Int8ConvSpec, seed: int, unit_scale: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "data": rng.integers(0, 256, spec.data_shape, dtype=np.uint8),
        "values": rng.integers(-128, 128, spec.values_shape, dtype=np.int8),
        "group_starts": np.stack(
            [np.sort(rng.choice(spec.groups, spec.kept_groups, replace=False)) * 4 for _ in range(spec.block_rows)]
        ).astype(np.int32),
        "scale": np.ones(spec.out_channels, np.float32)
        if unit_scale
        else rng.uniform(1e-4, 3e-4, spec.out_channels).astype(np.float32),
        "bias": np.zeros(spec.out_channels, np.float32)
        if unit_scale
        else rng.standard_normal(spec.out_channels).astype(np.float32),
    }
    if spec.residual == "float32":
        arrays["residual"] = rng.standard_normal(spec.out_shape).astype(np.float32)
    elif spec.residual == "uint8":
        arrays["residual"] = rng.integers(0, 256, spec.out_shape, dtype=np.uint8)
        arrays["residual_params"] = RESIDUAL_PARAMS
    if spec.out_dtype == "uint8":
        arrays["out_params"] = OUT_PARAMS
    return arrays


def _accumulators(spec: Int8ConvSpec, arrays) -> np.ndarray:
    """The int32 sums of the formula, in int64, padding reading the input zero point."""
    (kh, kw), (sh, sw), (ph, pw), N = spec.kernel_size, spec.stride, spec.padding, spec.block_size
    padded = np.pad(
        arrays["data"].astype(np.int64), ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=spec.input_zero_point
    )
    acc = np.zeros(spec.out_shape, np.int64)
    for r in range(spec.block_rows):
        for g, start in enumerate(arrays["group_starts"][r]):
            for s in range(kh):
                for t in range(kw):
                    window = padded[
                        :, s : s + sh * (spec.out_height - 1) + 1 : sh, t : t + sw * (spec.out_width - 1) + 1 : sw
                    ]
                    weights = arrays["values"][r, g, s, t].astype(np.int64)
                    acc[..., r * N : (r + 1) * N] += np.einsum("bhwi,ji->bhwj", window[..., start : start + 4], weights)
    return acc


def _epilogue(spec: Int8ConvSpec, arrays, acc: np.ndarray) -> np.ndarray:
    """The float32 value before any requantisation."""
    y = acc.astype(np.float32) * arrays["scale"] + arrays["bias"]
    if spec.residual == "float32":
        y = y + arrays["residual"]
    elif spec.residual == "uint8":
        y = y + (arrays["residual"].astype(np.float32) - RESIDUAL_PARAMS[1]) * RESIDUAL_PARAMS[0]
    return {"none": y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6)}[spec.activation]


def _run(spec, target, arrays, tile=None) -> np.ndarray:
    lib = _build(spec, target, tile)
    arrays = dict(arrays, values=kernel_values(arrays["values"], int8_path(target)))
    tensors = [tvm.runtime.tensor(arrays[name]) for name in spec.argument_names()[:-1]]
    out = tvm.runtime.empty(spec.out_shape, spec.out_dtype)
    lib["conv"](*tensors, out)
    return out.numpy()


def _check(spec: Int8ConvSpec, target, seed: int = 0, tile=None, unit_scale: bool = False) -> None:
    arrays = _arguments(spec, seed, unit_scale)
    out = _run(spec, target, arrays, tile)
    acc = _accumulators(spec, arrays)
    assert np.abs(acc).max() < 2**24  # float32(acc) is then exact
    y = _epilogue(spec, arrays, acc)
    if unit_scale:  # the int32 accumulation, exactly
        np.testing.assert_array_equal(out, acc.astype(np.float32))
    elif spec.out_dtype == "float32":
        ulp = np.finfo(np.float32).eps * max(1.0, float(np.abs(y).max()))
        np.testing.assert_allclose(out, y, rtol=0, atol=4 * ulp)
    else:
        ratio = y * (np.float32(1) / np.float32(OUT_PARAMS[0]))
        expected = np.clip(np.rint(ratio) + OUT_PARAMS[1], 0, 255)
        tie = np.abs(np.abs(ratio - np.floor(ratio)) - 0.5) < 1e-3
        difference = np.abs(out.astype(np.int64) - expected.astype(np.int64))
        assert difference[~tie].max(initial=0) == 0
        assert difference.max(initial=0) <= 1
        assert 0 < out.mean() < 255  # not everything clamped


def _spec(batch, size, c_in, c_out, N, kept, kernel, stride, padding, **rest):
    height, width = (size, size) if isinstance(size, int) else size
    return Int8ConvSpec(batch, height, width, c_in, c_out, N, kept, kernel, stride, padding, **rest)


# Odd sizes (7x5), stride 2, 3x3 pad 1, 1x1, Kg = 1 and 3, batch 2, N 16 and 32, both residuals,
# relu / relu6, zero points 0 and 128, float32 and uint8 outputs; a 7x7/2 pad 3 image stem (C_in 4:
# RGB and its zero-point channel), whose kernel rows are a loop, not unrolled.
CASES = [
    _spec(2, (7, 5), 32, 32, 16, 3, 3, 1, 1, input_zero_point=128, residual="uint8", activation="relu"),
    _spec(1, (7, 5), 16, 32, 16, 1, 3, 2, 1, input_zero_point=0, out_dtype="uint8", activation="relu6"),
    _spec(2, 6, 24, 64, 32, 3, 1, 1, 0, residual="float32", activation="relu", out_dtype="uint8"),
    _spec(1, (9, 7), 20, 16, 16, 5, 1, 2, 0, input_zero_point=128, residual="float32"),
    _spec(2, (13, 11), 4, 64, 32, 1, 7, 2, 3, input_zero_point=117, activation="relu"),
]


@pytest.mark.parametrize("spec", CASES, ids=lambda spec: f"{spec.kernel_size}s{spec.stride[0]}N{spec.block_size}")
@pytest.mark.parametrize("target", RUNNABLE, ids=lambda target: int8_path(target).name)
def test_matches_the_int64_reference(spec, target):
    _check(spec, target)


@pytest.mark.parametrize("target", RUNNABLE, ids=lambda target: int8_path(target).name)
def test_int32_accumulation_is_exact(target):
    spec = _spec(2, (7, 5), 32, 32, 16, 3, 3, 1, 1, input_zero_point=128)
    _check(spec, target, seed=3, unit_scale=True)


@pytest.mark.skipif(not RUNNABLE, reason="the host has no AVX-512")
@pytest.mark.parametrize(
    "tile",
    [
        ConvTile(1, 2),
        ConvTile(1, 3, parallel="pixels"),
        ConvTile(1, 7, parallel="block_rows"),
        ConvTile(2, 7, parallel="block_rows"),
        ConvTile(3, 2, parallel="pixels"),
        ConvTile(7, 2),
    ],
)
def test_tiles_and_parallel_modes(tile):
    """Tiles that do and do not divide the width (a narrower last tile) and the height (a
    shorter last row tile: 7 rows in 2 + 2 + 2 + 1 or 3 + 3 + 1), both parallel modes."""
    _check(_spec(2, (7, 7), 16, 32, 16, 2, 3, 1, 1, input_zero_point=3, activation="relu"), ICELAKE, tile=tile)


@pytest.mark.parametrize(
    "in_channels, images", [(2048, 1), (512, 1), (512, 9)], ids=["resnet50-fc", "resnet18-fc", "resnet18-fc-batch9"]
)
@pytest.mark.parametrize("target", RUNNABLE, ids=lambda target: int8_path(target).name)
def test_a_classifier_linear_as_a_1x1_conv_on_a_1xB_image(in_channels, images, target):
    """A ResNet fc (C_in -> 1000 padded to 1024, dense, N=32) as the lowering runs an int8 linear:
    its B images along the width of a one-row map. Every block-row is a parallel task (32 of
    them), so both threads stream weights even at batch 1; 9 images: a 7-pixel tile and a 2."""
    spec = _spec(1, (1, images), in_channels, 1024, 32, in_channels // 4, 1, 1, 0, input_zero_point=0)
    tile = int8_heuristic_tile(spec, int8_path(target))
    assert tile.parallel == "block_rows" and spec.block_rows == 32
    _check(spec, target, seed=5)


@pytest.mark.skipif(not RUNNABLE, reason="the host has no AVX-512")
def test_stem_tiles_with_a_narrower_last_one():
    """The 7x7/2 stem (kernel rows a loop) in 4-pixel tiles of a 6-pixel row: a loop of whole
    tiles, then a 2-pixel one."""
    spec = _spec(1, (13, 11), 4, 32, 16, 1, 7, 2, 3, input_zero_point=200, out_dtype="uint8", activation="relu")
    _check(spec, ICELAKE, tile=ConvTile(1, 4))


def test_generic_path_matches_the_reference():
    _check(_spec(1, (5, 6), 12, 16, 16, 2, 3, 1, 1, input_zero_point=9, residual="uint8"), GENERIC)


def _asm(spec, target) -> str:
    return _build(spec, target).mod.inspect_source("asm")


def test_paths_and_their_assembly():
    spec = _spec(1, 8, 32, 32, 16, 4, 3, 1, 1)
    assert [int8_path(t).name for t in (ICELAKE, ALDERLAKE, SKYLAKE, HASWELL, GENERIC)] == [
        "avx512-vnni",
        "avx-vnni",
        "avx512-pmaddwd",
        "avx2-pmaddwd",
        "generic-int32",
    ]
    vnni = _asm(spec, ICELAKE)
    assert "vpdpbusd" in vnni and "%zmm" in vnni
    avx_vnni = _asm(spec, ALDERLAKE)  # compiled only: Ice Lake lacks the VEX-encoded AVX-VNNI
    assert "vpdpbusd" in avx_vnni and "%zmm" not in avx_vnni
    skylake = _asm(spec, SKYLAKE)
    assert "vpdpbusd" not in skylake and "vpmaddwd" in skylake and "%zmm" in skylake
    haswell = _asm(spec, HASWELL)
    assert "vpdpbusd" not in haswell and "%zmm" not in haswell and "vpmaddwd" in haswell
    assert "vpshufb" in haswell  # the activation pairs widened by byte shuffles, not scalar code
    report = analyse_asm(vnni)
    assert report.hot_loop_spills == 0


def _kernel_row_loops(spec) -> int:
    script = block_sparse_conv2d_int8_primfunc(spec, None, ICELAKE).script()
    return script.count(f"for s in range({spec.kernel_size[0]})")


def test_kernel_rows_are_a_loop_only_beyond_3x3():
    """3x3 and 1x1 kernels unroll every tap (fastest); a 7x7 stem keeps its 7 kernel rows a loop
    (unrolled, it compiled 3x slower and ran slower)."""
    assert _kernel_row_loops(_spec(1, 8, 32, 32, 16, 4, 3, 1, 1)) == 0
    assert _kernel_row_loops(_spec(1, 8, 32, 32, 16, 4, 1, 1, 0)) == 0
    assert _kernel_row_loops(_spec(1, 16, 4, 64, 32, 1, 7, 2, 3)) == 2  # border and interior tiles


def test_heuristic_tile_fits_the_registers_and_evens_out_the_row():
    path = int8_path(ICELAKE)
    assert int8_heuristic_tile(_spec(1, 56, 64, 64, 16, 8, 1, 1, 0), path).cols == 14
    assert int8_heuristic_tile(_spec(1, 15, 64, 64, 16, 8, 1, 1, 0), path).cols == 8
    assert int8_heuristic_tile(_spec(1, 56, 64, 64, 32, 8, 1, 1, 0), path).cols == 7


def test_heuristic_tile_takes_whole_rows_where_a_row_is_narrower_than_the_registers():
    """A 7x7 map at N=16 (14 accumulators): 2 rows x 7 (the last row tile 1 row); at N=32
    (7 pixels) one row; 5 rows x 3 columns: 4 rows fit, evened out to 3 + 2; a 1xB image
    (a classifier run as a conv) stays one row."""
    path = int8_path(ICELAKE)
    tile = int8_heuristic_tile(_spec(1, 7, 512, 512, 16, 64, 3, 1, 1), path)
    assert (tile.rows, tile.cols) == (2, 7)
    tile = int8_heuristic_tile(_spec(1, 7, 512, 512, 32, 64, 3, 1, 1), path)
    assert (tile.rows, tile.cols) == (1, 7)
    tile = int8_heuristic_tile(_spec(1, (5, 3), 64, 64, 16, 8, 1, 1, 0), path)
    assert (tile.rows, tile.cols) == (3, 3)
    tile = int8_heuristic_tile(_spec(1, (1, 3), 64, 64, 16, 8, 1, 1, 0), path)
    assert (tile.rows, tile.cols) == (1, 3)


def test_spec_shapes_and_ops():
    spec = _spec(2, 8, 32, 64, 16, 3, 3, 2, 1, residual="uint8", out_dtype="uint8")
    assert spec.argument_names() == [
        "data",
        "values",
        "group_starts",
        "scale",
        "bias",
        "residual",
        "residual_params",
        "out_params",
        "out",
    ]
    assert spec.values_shape == (4, 3, 3, 3, 16, 4)
    assert spec.out_shape == (2, 4, 4, 64)
    assert spec.ops == 2 * 2 * 4 * 4 * 64 * 3 * 4 * 9
    assert spec.float_equivalent().kept_per_row == 12


@pytest.mark.parametrize(
    "change, message",
    [
        ({"in_channels": 30}, "multiple of 4"),
        ({"block_size": 8}, "not supported"),
        ({"kept_groups": 9}, "exceeds"),
        ({"input_zero_point": 256}, "0..255"),
        ({"residual": "int8"}, "residual must be"),
        ({"out_dtype": "int8"}, "out_dtype must be"),
        ({"activation": "tanh"}, "activation must be"),
    ],
)
def test_bad_specs_are_refused(change, message):
    arguments = dict(
        batch=1, height=8, width=8, in_channels=32, out_channels=32, block_size=16, kept_groups=2, kernel_size=3
    )
    with pytest.raises(KernelSpecError, match=message):
        Int8ConvSpec(**{**arguments, **change})


def test_staged_padding_is_refused():
    with pytest.raises(KernelSpecError, match="inline padding"):
        block_sparse_conv2d_int8_primfunc(_spec(1, 8, 32, 32, 16, 2, 3, 1, 1), ConvTile(2, 4, "stage"), ICELAKE)


def _double_rounding_cases(scale: np.float32, count: int) -> list[tuple[int, np.float32]]:
    """(residual level a, conv value y) pairs whose sum ``y + a * scale`` rounds to a different
    code when the product is rounded to float32 first (the reference) than when it is fused
    into one FMA: the exact sum lies a hair from a half-integer."""
    cases = []
    for a in range(1, 120):
        for k in range(1, 100):
            y = np.float32(np.float64(k) + 0.5 - np.float64(a) * np.float64(scale))
            fused = np.float32(np.float64(y) + np.float64(a) * np.float64(scale))
            rounded_first = np.float32(y + np.float32(np.float32(a) * scale))
            if np.rint(fused) != np.rint(rounded_first):
                cases.append((a, y))
                break
        if len(cases) == count:
            return cases
    raise AssertionError("too few cases")


@pytest.mark.parametrize("target", [*RUNNABLE[:1], GENERIC], ids=lambda target: int8_path(target).name)
def test_a_uint8_residual_is_rounded_to_float32_before_the_add(target):
    """The dequantised residual ``(q - zp) * s`` is rounded to float32 and then added, as the
    fake-quant reference does; LLVM had fused the product and the add into one FMA, which rounds
    once and gave another code for sums next to a half-integer (torchvision ResNet-50, random
    weights, 112 px: 0.8% of the max logit off the reference; exact since). Each of the 16
    channels holds one such sum (zero weights: the conv's value is its bias)."""
    spec = _spec(1, (2, 3), 4, 16, 16, 1, 1, 1, 0, residual="uint8", out_dtype="uint8")
    scale, zero_point = np.float32(0.8176950216293335), 100
    cases = _double_rounding_cases(scale, spec.out_channels)
    levels = np.array([a for a, _ in cases])
    values = np.array([y for _, y in cases], np.float32)
    arrays = {
        "data": np.zeros(spec.data_shape, np.uint8),
        "values": np.zeros(spec.values_shape, np.int8),
        "group_starts": np.zeros((spec.block_rows, spec.kept_groups), np.int32),
        "scale": np.ones(spec.out_channels, np.float32),
        "bias": values,
        "residual": np.broadcast_to(zero_point + levels, spec.out_shape).astype(np.uint8),
        "residual_params": np.array([scale, zero_point], np.float32),
        "out_params": np.array([1.0, 0.0], np.float32),
    }
    out = _run(spec, target, arrays)
    rounded_first = values + (levels.astype(np.float32) * scale).astype(np.float32)
    fused = (values.astype(np.float64) + levels * np.float64(scale)).astype(np.float32)
    assert (np.rint(rounded_first) != np.rint(fused)).all()
    np.testing.assert_array_equal(out, np.broadcast_to(np.rint(rounded_first), spec.out_shape))
