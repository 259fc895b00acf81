"""The pad and nearest-upsample kernels against numpy on small odd NHWC shapes, and their schedule."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.kernels.resample import constant_pad_primfunc, upsample_nearest_primfunc  # noqa: E402


def _run(primfunc, x: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    function = tvm.compile(tvm.IRModule({"main": primfunc}), target="llvm")
    out = tvm.runtime.empty(out_shape, "float32")
    function["main"](tvm.runtime.tensor(x), out)
    return out.numpy()


@pytest.mark.parametrize(
    ("shape", "pads", "value"),
    [((1, 5, 7, 3), (0, 1, 0, 1), 0.0), ((2, 3, 4, 16), (2, 1, 1, 3), 0.0), ((1, 4, 5, 8), (1, 1, 1, 1), -1.5)],
)
def test_constant_pad_matches_numpy(shape, pads, value):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    top, bottom, left, right = pads
    expected = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)
    got = _run(constant_pad_primfunc(shape, pads, 8, value), x, expected.shape)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("shape", "scale"), [((1, 3, 5, 7), (2, 2)), ((2, 4, 3, 16), (3, 2)), ((1, 1, 1, 8), (2, 1))])
def test_upsample_nearest_matches_numpy(shape, scale):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected = x.repeat(scale[0], axis=1).repeat(scale[1], axis=2)
    got = _run(upsample_nearest_primfunc(shape, scale, 8), x, expected.shape)
    np.testing.assert_array_equal(got, expected)


def test_kernels_run_parallel_over_rows_and_vectorised_over_channels():
    for primfunc in (
        constant_pad_primfunc((2, 5, 7, 16), (0, 1, 0, 1), 8),
        upsample_nearest_primfunc((2, 5, 7, 16), (2, 2), 8),
    ):
        text = primfunc.script()
        assert "T.parallel(" in text and "T.vectorized(8)" in text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        constant_pad_primfunc((1, 4, 4, 8), (0, -1, 0, 0), 8)
    with pytest.raises(ValueError, match="integers >= 1"):
        upsample_nearest_primfunc((1, 4, 4, 8), (0, 2), 8)
