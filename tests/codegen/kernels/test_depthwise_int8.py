"""The int8 depthwise kernel against an int64 numpy reference of its arithmetic (``int8_spec``'s
epilogue without residual), stride 1 / 2, ReLU / ReLU6, float32 and uint8 out; and its assembly."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels.depthwise_int8 import DepthwiseInt8Spec, depthwise_int8_primfunc  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402

NATIVE = parse_target("llvm -mcpu=native")
OUT_PARAMS = np.array([0.05, 11.0], dtype=np.float32)  # [scale, zero point] of a uint8 output
NUMPY_ACTIVATIONS = {"none": lambda y: y, "relu": lambda y: np.maximum(y, 0), "relu6": lambda y: np.clip(y, 0, 6)}


def _compile(spec: DepthwiseInt8Spec, target):
    function = depthwise_int8_primfunc(spec, target).with_attr("global_symbol", "depthwise")
    return tvm.compile(tvm.IRModule({"depthwise": function}), target=target)


def _reference(spec: DepthwiseInt8Spec, data, weight, scale, bias) -> np.ndarray:
    """int64 accumulation over the zero-point-padded uint8 input, then the float32 epilogue."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
    padded = np.pad(data.astype(np.int64), ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=spec.input_zero_point)
    acc = np.zeros(spec.out_shape, dtype=np.int64)
    for s in range(kh):
        for t in range(kw):
            rows = padded[:, s * dh : s * dh + (spec.out_height - 1) * sh + 1 : sh]
            window = rows[:, :, t * dw : t * dw + (spec.out_width - 1) * sw + 1 : sw]
            acc += window * weight[s, t].astype(np.int64)
    y = NUMPY_ACTIVATIONS[spec.activation](acc.astype(np.float32) * scale + bias)
    if spec.out_dtype == "float32":
        return y
    level = np.rint(y * (np.float32(1) / OUT_PARAMS[0])) + OUT_PARAMS[1]
    return np.clip(level, 0, 255).astype(np.uint8)


def _run(spec: DepthwiseInt8Spec, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, spec.data_shape, dtype=np.uint8)
    weight = rng.integers(-127, 128, spec.weight_shape, dtype=np.int8)
    scale = (rng.random(spec.channels, dtype=np.float32) * 1e-3 + 1e-4).astype(np.float32)
    bias = rng.standard_normal(spec.channels, dtype=np.float32)
    arguments = [data, weight, scale, bias] + ([OUT_PARAMS] if spec.out_dtype == "uint8" else [])
    out = tvm.runtime.empty(spec.out_shape, spec.out_dtype)
    _compile(spec, NATIVE)["depthwise"](*[tvm.runtime.tensor(array) for array in arguments], out)
    return out.numpy(), _reference(spec, data, weight, scale, bias)


@pytest.mark.parametrize(
    "spec",
    [
        DepthwiseInt8Spec(2, 9, 11, 32, (3, 3), padding=(1, 1), activation="relu", input_zero_point=0),
        DepthwiseInt8Spec(1, 13, 12, 48, (3, 3), stride=(2, 2), padding=(1, 1), activation="relu6", input_zero_point=9),
        DepthwiseInt8Spec(1, 8, 15, 16, (3, 3), padding=(1, 1), input_zero_point=200),
        DepthwiseInt8Spec(3, 5, 5, 24, (3, 3), stride=(2, 2), padding=(1, 1), activation="relu", input_zero_point=128),
        DepthwiseInt8Spec(1, 9, 9, 20, (5, 5), padding=(4, 4), dilation=(2, 2), input_zero_point=3),
        DepthwiseInt8Spec(1, 6, 7, 16, (3, 3), activation="relu6", input_zero_point=255),
    ],
    ids=["relu-s1", "relu6-s2", "zp200", "relu-s2-batch3", "5x5-dilated", "unpadded-zp255"],
)
@pytest.mark.parametrize("out_dtype", ["float32", "uint8"])
def test_matches_the_int64_reference(spec, out_dtype):
    spec = DepthwiseInt8Spec(**{**spec.__dict__, "out_dtype": out_dtype})
    got, expected = _run(spec)
    if out_dtype == "uint8":
        # both sides round the same float32 value, except where FMA contraction moves it across a
        # half: at most a few codes by one
        difference = np.abs(got.astype(np.int32) - expected.astype(np.int32))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
        assert len(np.unique(expected)) > 20  # the requantisation is exercised, not saturated
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_the_largest_sums_are_exact():
    """255 * 127 * 9 taps: the float32 accumulation must still give the integer sum exactly."""
    spec = DepthwiseInt8Spec(1, 4, 4, 16, (3, 3), input_zero_point=0)
    data = np.full(spec.data_shape, 255, dtype=np.uint8)
    weight = np.full(spec.weight_shape, 127, dtype=np.int8)
    weight[..., ::2] = -127
    ones, zeros = np.ones(16, dtype=np.float32), np.zeros(16, dtype=np.float32)
    out = tvm.runtime.empty(spec.out_shape, "float32")
    arguments = [tvm.runtime.tensor(array) for array in (data, weight, ones, zeros)]
    _compile(spec, NATIVE)["depthwise"](*arguments, out)
    expected = np.where(np.arange(16) % 2 == 0, -255 * 127 * 9, 255 * 127 * 9).astype(np.float32)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(expected, spec.out_shape))


def test_the_taps_are_fmas_on_widened_bytes_without_spills_and_the_store_is_one_vpmovusdb():
    spec = DepthwiseInt8Spec(1, 28, 28, 64, (3, 3), padding=(1, 1), activation="relu6", out_dtype="uint8")
    asm = _compile(spec, parse_target("llvm -mcpu=icelake-server")).jit().inspect_source("asm")
    assert "vpmovzxbd" in asm and "vcvtdq2ps" in asm and "vfmadd231ps\t%zmm" in asm and "vpmovusdb" in asm
    assert not re.search(r"vmov\w+\s+%zmm\d+, -?\d*\(%rsp\)", asm)  # no accumulator spilled to the stack


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_zero_point": 256}, "input_zero_point must be an integer in 0..255"),
        ({"out_dtype": "int8"}, "out_dtype must be one of float32, uint8"),
        ({"bias": False}, "always takes a bias"),
        ({"activation": "tanhh"}, "activation must be one of"),
        ({"kernel_size": (23, 23)}, "exact up to 518"),
    ],
)
def test_the_spec_refuses_what_the_kernel_cannot_compute(changes, message):
    with pytest.raises(KernelSpecError, match=message):
        DepthwiseInt8Spec(**{**dict(batch=1, height=8, width=8, channels=16, kernel_size=(3, 3)), **changes})
