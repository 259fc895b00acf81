"""The max pool kernel on float32 maps and on the uint8 codes of an int8 build, against numpy,
padding included (-inf for floats, 0 -- the lowest code -- for bytes)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.kernels.pooling import PoolWindow, max_pool2d_primfunc  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402

# 11x9 input, 3x3/2 window, padding 1: border windows overlap the padding on every side.
WINDOW = PoolWindow(2, 11, 9, 24, 6, 5, (3, 3), (2, 2), (1, 1))


def _reference(x: np.ndarray, window: PoolWindow, pad_value) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw) = window.kernel_size, window.stride, window.padding
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=pad_value)
    out = np.full(window.out_shape, pad_value, dtype=x.dtype)
    for s in range(kh):
        for t in range(kw):
            rows = slice(s, s + sh * (window.out_height - 1) + 1, sh)
            cols = slice(t, t + sw * (window.out_width - 1) + 1, sw)
            out = np.maximum(out, padded[:, rows, cols])
    return out


@pytest.mark.parametrize("dtype, lanes", [("float32", 16), ("uint8", 64), ("uint8", 16)])
def test_max_pool_matches_numpy_with_padding(dtype, lanes):
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        x = rng.integers(0, 256, WINDOW.in_shape, dtype=np.uint8)
        x[:, :, :, 0] = 0  # a channel of zero codes: its padded windows stay 0
        pad_value = 0
    else:
        x = rng.standard_normal(WINDOW.in_shape).astype(np.float32) - 3.0  # all negative: padding must not win
        pad_value = -np.inf
    func = max_pool2d_primfunc(WINDOW, lanes, dtype).with_attr("global_symbol", "pool")
    lib = tvm.compile(tvm.IRModule({"pool": func}), target=parse_target("llvm -mcpu=native"))
    out = tvm.runtime.empty(WINDOW.out_shape, dtype)
    lib["pool"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), _reference(x, WINDOW, pad_value))
