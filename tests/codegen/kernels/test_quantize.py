"""The quantise / dequantise kernels against numpy (``x * float32(1 / scale)``, round half to
even, clamped: ``quantize.params``' arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels.quantize import (  # noqa: E402
    dequantize_primfunc,
    quantize_image_primfunc,
    quantize_primfunc,
)
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.quantize.params import ActivationQuant  # noqa: E402

TARGET = parse_target("llvm -mcpu=native")


def _run(func, arrays, out_shape, out_dtype):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    out = tvm.runtime.empty(out_shape, out_dtype)
    lib["main"](*[tvm.runtime.tensor(array) for array in arrays], out)
    return out.numpy()


@pytest.mark.parametrize("shape", [(2, 7, 5, 12), (3, 33)])
@pytest.mark.parametrize("zero_point", [0.0, 128.0])
def test_quantize_rounds_half_to_even_and_clamps(shape, zero_point):
    rng = np.random.default_rng(0)
    scale = np.float32(0.25)
    data = (rng.standard_normal(shape) * 40).astype(np.float32)
    data.flat[:4] = [0.125, 0.375, -0.625, 1e6]  # ties (x / 0.25 = 0.5, 1.5, -2.5) and an overflow
    params = np.array([scale, zero_point], np.float32)
    out = _run(quantize_primfunc(shape), [data, params], shape, "uint8")
    expected = np.clip(np.rint(data * (np.float32(1) / scale)) + zero_point, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    # 0.5 -> 0, 1.5 -> 2, -2.5 -> -2
    assert out.flat[0] == np.uint8(zero_point) and out.flat[1] == np.uint8(zero_point + 2)
    assert out.flat[2] == np.uint8(max(zero_point - 2, 0))
    np.testing.assert_array_equal(out, ActivationQuant(float(scale), int(zero_point)).quantize(data))


def test_dequantize_matches_numpy():
    rng = np.random.default_rng(1)
    shape = (2, 5, 3, 8)
    data = rng.integers(0, 256, shape, dtype=np.uint8)
    params = np.array([0.05, 113.0], np.float32)
    out = _run(dequantize_primfunc(shape), [data, params], shape, "float32")
    np.testing.assert_allclose(out, (data.astype(np.float32) - 113.0) * np.float32(0.05), rtol=1e-6, atol=1e-6)


def test_bad_shape_is_refused():
    with pytest.raises(KernelSpecError, match="shape must be"):
        quantize_primfunc((2, 0))


def test_quantize_pads_the_channels_with_the_zero_point():
    rng = np.random.default_rng(2)
    shape = (1, 5, 3, 3)  # an RGB image, NHWC
    data = rng.standard_normal(shape).astype(np.float32)
    params = np.array([0.02, 117.0], np.float32)
    out = _run(quantize_primfunc(shape, padded_channels=4), [data, params], (1, 5, 3, 4), "uint8")
    np.testing.assert_array_equal(out[..., :3], ActivationQuant(float(np.float32(0.02)), 117).quantize(data))
    assert (out[..., 3] == 117).all()
    with pytest.raises(KernelSpecError, match="padded_channels must be an integer >= the 3 channels"):
        quantize_primfunc(shape, padded_channels=2)


@pytest.mark.parametrize(
    "shape, padded",
    [((1, 3, 4, 32), 4), ((2, 5, 3, 9), 8), ((1, 4, 2, 16), 4), ((1, 3, 3, 17), 8)],
    ids=["rgb", "5-channels", "no-padding", "width-17-two-groups-of-zero-points"],
)
def test_an_image_is_quantised_from_nchw_into_padded_nhwc(shape, padded):
    """The same codes as quantising the NHWC image, the channels beyond C at the zero point; 16-
    pixel vectors (width 32), an odd width that is one vector (9), and one that no lane count
    divides (17)."""
    rng = np.random.default_rng(3)
    data = (rng.standard_normal(shape) * 30).astype(np.float32)
    data.flat[:3] = [0.125, -0.625, 1e6]  # ties and an overflow
    params = np.array([0.25, 101.0], np.float32)
    batch, channels, height, width = shape
    func = quantize_image_primfunc(shape, padded).with_attr("global_symbol", "main")  # as the program names it
    out = _run(func, [data, params], (batch, height, width, padded), "uint8")
    codes = ActivationQuant(0.25, 101).quantize(data).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out[..., :channels], codes)
    assert (out[..., channels:] == 101).all()


@pytest.mark.parametrize(
    "shape, padded, message",
    [((1, 3, 4), 4, "NCHW"), ((1, 3, 4, 4), 6, "multiple of 4"), ((1, 5, 4, 4), 4, "multiple of 4 and >= the 5")],
)
def test_a_bad_image_shape_or_padding_is_refused(shape, padded, message):
    with pytest.raises(KernelSpecError, match=message):
        quantize_image_primfunc(shape, padded)
