"""The bf16 block-sparse conv kernel (``vdpbf16ps``) against a float64 reference of the same bf16
values, its assembly (built for znver4 on any host), its spec and refusals; and the float32 ->
bf16 conversion kernel against torch's rounding."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.codegen.errors import KernelSpecError, TargetError  # noqa: E402
from subp_fx.codegen.kernels.bf16_convert import to_bf16_primfunc  # noqa: E402
from subp_fx.codegen.kernels.bf16_spec import Bf16ConvSpec  # noqa: E402
from subp_fx.codegen.kernels.block_sparse_conv_bf16 import (  # noqa: E402
    block_sparse_conv2d_bf16_primfunc,
    from_bf16_bits,
    to_bf16_bits,
)
from subp_fx.codegen.kernels.isa import bf16_path  # noqa: E402
from subp_fx.codegen.kernels.spec import ConvTile  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tuning.asm import analyse_asm  # noqa: E402

ZNVER4 = parse_target("llvm -mcpu=znver4")
TORCH_ACTIVATIONS = {
    "none": lambda t: t,
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,  # not a clamp: the scalar write-back
    "hardswish": torch.nn.functional.hardswish,
}
HOST_HAS_BF16 = bf16_path(parse_target("llvm -mcpu=native")) is not None
needs_bf16_host = pytest.mark.skipif(not HOST_HAS_BF16, reason="this CPU has no avx512_bf16 to run the kernel")


def _build(func, target=ZNVER4):
    func = func.with_attr("global_symbol", "kernel")
    return tvm.compile(tvm.IRModule({"kernel": func}), target=target)


def _arguments(spec: Bf16ConvSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "data": to_bf16_bits(rng.standard_normal(spec.data_shape).astype(np.float32)),
        "values": to_bf16_bits(rng.standard_normal(spec.values_shape).astype(np.float32)),
        "pair_starts": np.stack(
            [
                np.sort(rng.choice(spec.in_channels // spec.word_channels, spec.kept_words, replace=False))
                * spec.word_channels
                for _ in range(spec.block_rows)
            ]
        ).astype(np.int32),
        "bias": rng.standard_normal(spec.out_channels).astype(np.float32),
    }
    if spec.residual == "float32":
        arrays["residual"] = rng.standard_normal(spec.out_shape).astype(np.float32)
    elif spec.residual == "bfloat16":
        arrays["residual"] = to_bf16_bits(rng.standard_normal(spec.out_shape).astype(np.float32))
    return arrays


def _reference(spec: Bf16ConvSpec, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The spec's formula in float64 on the bf16 values (products of bf16 values are exact)."""
    R, N = spec.block_rows, spec.block_size
    kh, kw = spec.kernel_size
    values = from_bf16_bits(arrays["values"]).astype(np.float64)
    if spec.pairs_per_word == 2:  # (R, Kg/2, kh, kw, N/8, 16, 2): lane 2c + h is pair h of channel c
        values = values.reshape(R, spec.kept_words, kh, kw, N // 8, 8, 2, 2)
        values = values.transpose(0, 1, 6, 2, 3, 4, 5, 7).reshape(R, spec.kept_pairs, kh, kw, N, 2)
        starts = (arrays["pair_starts"][:, :, None] + np.array([0, 2])).reshape(R, spec.kept_pairs)
    else:
        starts = arrays["pair_starts"]
    weight = np.zeros((spec.out_channels, spec.in_channels, kh, kw))
    for r in range(R):
        for g in range(spec.kept_pairs):
            for i in range(2):
                weight[r * N : (r + 1) * N, starts[r, g] + i] += values[r, g, :, :, :, i].transpose(2, 0, 1)
    x = torch.from_numpy(from_bf16_bits(arrays["data"]).astype(np.float64)).permute(0, 3, 1, 2)
    y = torch.nn.functional.conv2d(
        x,
        torch.from_numpy(weight),
        torch.from_numpy(arrays["bias"].astype(np.float64)),
        stride=spec.stride,
        padding=spec.padding,
    )
    y = y.permute(0, 2, 3, 1).numpy()
    if spec.residual == "float32":
        y = y + arrays["residual"]
    elif spec.residual == "bfloat16":
        y = y + from_bf16_bits(arrays["residual"])
    return TORCH_ACTIVATIONS[spec.activation](torch.from_numpy(y)).numpy()


def _run(spec: Bf16ConvSpec, tile=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    arrays = _arguments(spec, seed)
    module = _build(block_sparse_conv2d_bf16_primfunc(spec, tile, ZNVER4))
    out_dtype = np.float32 if spec.out_dtype == "float32" else np.uint16
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, out_dtype))
    module["kernel"](*[tvm.runtime.tensor(arrays[name]) for name in spec.argument_names()[:-1]], out)
    got = out.numpy()
    return (got if spec.out_dtype == "float32" else from_bf16_bits(got)), _reference(spec, arrays)


SHAPES = [
    # (batch, H, W, C_in, C_out, N, kept pairs, kernel, stride, padding, residual, activation, out dtype)
    (1, 8, 8, 16, 32, 16, 5, 3, 1, 1, "none", "relu", "float32"),
    (2, 9, 7, 12, 32, 32, 6, 3, 2, 1, "float32", "none", "float32"),  # batch 2, odd sizes, N=32, dense
    (1, 6, 6, 32, 16, 16, 9, 1, 1, 0, "bfloat16", "relu", "float32"),  # 1x1, bf16 residual
    (1, 10, 10, 8, 16, 16, 3, 3, 1, 1, "float32", "relu", "bfloat16"),  # bf16 store
    (1, 15, 15, 4, 32, 32, 2, 7, 2, 3, "none", "relu", "float32"),  # 7x7/2 stem: a row loop
    (1, 16, 30, 16, 16, 16, 4, 3, 1, 1, "none", "none", "float32"),  # two column tiles and a rest
    (1, 6, 6, 32, 32, 16, 9, 1, 1, 0, "bfloat16", "silu", "bfloat16"),  # the scalar write-back
]
# pairs_per_word=2 (64-bit words, lane-pair sums): 1x1 convs of block-rows keeping groups of 4
WIDE_SHAPES = [
    (1, 14, 14, 32, 16, 16, 8, 1, 1, 0, "bfloat16", "relu", "bfloat16"),
    (2, 9, 9, 64, 64, 32, 12, 1, 2, 0, "float32", "none", "float32"),  # stride 2, N=32, batch 2
    (1, 6, 6, 16, 32, 16, 4, 3, 1, 1, "none", "relu", "float32"),  # also right for a padded 3x3
    (1, 7, 7, 32, 32, 32, 8, 1, 1, 0, "float32", "hardswish", "bfloat16"),  # the scalar write-back
]


def _assert_computes_the_formula(shape, pairs_per_word: int) -> None:
    *geometry, residual, activation, out_dtype = shape
    spec = Bf16ConvSpec(
        *geometry, residual=residual, activation=activation, out_dtype=out_dtype, pairs_per_word=pairs_per_word
    )
    got, expected = _run(spec)
    scale = np.abs(expected).max()
    if out_dtype == "float32":
        # float32 sums of exact products: summation-order rounding only
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale)
    else:
        # rounded to bf16: within half a bf16 step (2^-8 relative) plus the float32 sums' error
        np.testing.assert_array_less(np.abs(got - expected), np.abs(expected) * 2**-8 + 1e-6 * scale)


@needs_bf16_host
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "-".join(map(str, shape)))
def test_the_kernel_computes_the_formula(shape):
    _assert_computes_the_formula(shape, pairs_per_word=1)


@needs_bf16_host
@pytest.mark.parametrize("shape", WIDE_SHAPES, ids=lambda shape: "-".join(map(str, shape)))
def test_64_bit_words_compute_the_formula(shape):
    _assert_computes_the_formula(shape, pairs_per_word=2)


def test_a_64_bit_word_feeds_two_vdpbf16ps_from_one_broadcast():
    spec = Bf16ConvSpec(1, 28, 28, 256, 64, 16, 64, 1, 1, 0, activation="relu", pairs_per_word=2)
    asm = _build(block_sparse_conv2d_bf16_primfunc(spec, None, ZNVER4)).mod.inspect_source("asm")
    assert "vbroadcastsd" in asm or "vpbroadcastq" in asm
    assert analyse_asm(asm).hot_loop_spills == 0


@needs_bf16_host
def test_a_given_two_row_tile_computes_the_same():
    spec = Bf16ConvSpec(1, 7, 7, 16, 16, 16, 4, 3, 1, 1, activation="relu")
    got, expected = _run(spec, ConvTile(2, 7))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_one_vdpbf16ps_per_pixel_and_weight_vector_and_no_call_left():
    spec = Bf16ConvSpec(1, 14, 14, 64, 32, 16, 12, 3, 1, 1, residual="float32", activation="relu")
    asm = _build(block_sparse_conv2d_bf16_primfunc(spec, None, ZNVER4)).mod.inspect_source("asm")
    assert "vdpbf16ps" in asm and "%zmm" in asm
    assert "subp_fx_dpbf16ps_512" not in asm  # the imported function was inlined, its symbol dropped
    report = analyse_asm(asm)
    assert report.hot_loop_spills == 0


def test_the_bf16_store_rounds_like_torch():
    # bits of the rounding in the epilogue (and the conversion kernel) = torch's, incl. ties
    values = np.array([1.0, 1.00390625, 1.01171875, -3.0000002, 65504.0, 3e38, -0.0, 1e-40], np.float32)
    tensor = tvm.runtime.tensor(np.zeros(values.shape, np.uint16))
    _build(to_bf16_primfunc(values.shape), parse_target("llvm -mcpu=x86-64"))["kernel"](
        tvm.runtime.tensor(values), tensor
    )
    np.testing.assert_array_equal(tensor.numpy(), to_bf16_bits(values))


def test_the_conversion_pads_channels_with_zeros():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    out = tvm.runtime.tensor(np.full((2, 5, 5, 4), 7, np.uint16))
    _build(to_bf16_primfunc(data.shape, 4), parse_target("llvm -mcpu=x86-64"))["kernel"](tvm.runtime.tensor(data), out)
    np.testing.assert_array_equal(out.numpy()[..., :3], to_bf16_bits(data))
    assert not out.numpy()[..., 3].any()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"in_channels": 15}, "in_channels=15 is odd"),
        ({"block_size": 8, "out_channels": 16}, "N=8 is not supported by the bf16 kernel"),
        ({"kept_pairs": 9}, "kept_pairs Kg=9 exceeds the 8 pairs"),
        ({"residual": "uint8"}, "residual must be one of none, float32, bfloat16"),
        ({"out_dtype": "float16"}, "out_dtype must be one of float32, bfloat16"),
        ({"pairs_per_word": 3}, "pairs_per_word must be one of"),
        ({"pairs_per_word": 2, "kept_pairs": 3}, "must be multiples of 4"),
    ],
)
def test_the_spec_refuses_what_the_kernel_cannot_do(fields, message):
    geometry = {"batch": 1, "height": 4, "width": 4, "in_channels": 16, "out_channels": 32, "block_size": 16}
    with pytest.raises(KernelSpecError, match=message):
        Bf16ConvSpec(**{**geometry, "kept_pairs": 4, **fields})


@pytest.mark.parametrize("cpu", ["icelake-server", "znver3"])
def test_a_target_without_avx512_bf16_is_refused(cpu):
    spec = Bf16ConvSpec(1, 4, 4, 16, 16, 16, 4)
    with pytest.raises(TargetError, match=f"needs avx512_bf16.*\\({cpu}\\) has none"):
        block_sparse_conv2d_bf16_primfunc(spec, None, parse_target(f"llvm -mcpu={cpu}"))


def test_spec_ops_count_kept_pairs():
    spec = Bf16ConvSpec(1, 4, 4, 16, 32, 16, 3, kernel_size=3, padding=1)
    assert spec.ops == 2 * 16 * 32 * 6 * 9
    assert spec.float_equivalent().kept_per_row == 6
