"""kernels.layout's channel kernels on small odd shapes: the shuffle gather, the slice at an
offset and the strided slice against numpy / torch, each parallel over pixels and vectorised over
channels."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.codegen.kernels.layout import (  # noqa: E402
    shuffle_channels_primfunc,
    slice_channels_primfunc,
    strided_slice_primfunc,
)
from subp_fx.codegen.target import parse_target  # noqa: E402

TARGET = parse_target("llvm -mcpu=native")
LANES = 8


def _run(function, x: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    executable = tvm.compile(tvm.IRModule({"main": function.with_attr("global_symbol", "main")}), target=TARGET)
    out = tvm.runtime.empty(out_shape, "float32")
    executable.jit()["main"](tvm.runtime.tensor(x), out)
    return out.numpy()


def _assert_scheduled(function) -> None:
    script = function.script()
    assert "T.parallel(" in script and "T.vectorized(" in script


def _torch_shuffle_nhwc(x: np.ndarray, groups: int) -> np.ndarray:
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    return torch.channel_shuffle(nchw, groups).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    ("shape", "groups", "start", "count"),
    [
        ((2, 3, 5, 48), 2, 0, None),  # the whole shuffle
        ((1, 3, 5, 45), 3, 0, None),  # 15 channels per group: vectors of 5 (lane_chunk)
        ((2, 5, 3, 30), 2, 15, 15),  # the second half of a shuffle, as chunk(2) takes it
        ((1, 2, 7, 42), 7, 7, 21),  # a range straddling groups
    ],
)
def test_shuffle_channels_matches_torch_channel_shuffle(shape, groups, start, count):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    function = shuffle_channels_primfunc(shape, groups, LANES, start, count)
    _assert_scheduled(function)
    count = shape[3] - start if count is None else count
    got = _run(function, x, (*shape[:3], count))
    np.testing.assert_array_equal(got, _torch_shuffle_nhwc(x, groups)[..., start : start + count])


@pytest.mark.parametrize(("shape", "start", "keep"), [((2, 3, 5, 30), 0, 15), ((1, 5, 3, 29), 11, 12)])
def test_slice_channels_at_an_offset(shape, start, keep):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    function = slice_channels_primfunc(shape, keep, LANES, start)
    _assert_scheduled(function)
    np.testing.assert_array_equal(_run(function, x, (*shape[:3], keep)), x[..., start : start + keep])


def test_channel_ranges_outside_the_input_are_refused():
    with pytest.raises(ValueError, match="channels 20..40 are not within the 30"):
        slice_channels_primfunc((1, 2, 2, 30), 20, LANES, 20)
    with pytest.raises(ValueError, match="cannot shuffle channels 0..30 of .* in 4 groups"):
        shuffle_channels_primfunc((1, 2, 2, 30), 4, LANES)


@pytest.mark.parametrize(
    ("shape", "begin", "steps", "out_shape"),
    [
        ((2, 7, 5, 30), (0, 1, 0, 3), (1, 2, 2), (2, 3, 3, 16)),  # odd rows / even columns, channels 3..19
        ((3, 4, 6, 9), (1, 0, 0, 0), (2, 1, 1), (1, 4, 6, 9)),  # every other image from the second
        ((1, 9, 8, 5), (0, 2, 3, 0), (1, 3, 4), (1, 3, 2, 5)),  # steps past the last element
    ],
)
def test_strided_slice_matches_numpy(shape, begin, steps, out_shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    function = strided_slice_primfunc(shape, begin, steps, out_shape, LANES)
    _assert_scheduled(function)
    (b, h, w, c), (sb, sh, sw) = begin, steps
    nb, nh, nw, nc = out_shape
    expected = x[b : b + nb * sb : sb, h : h + nh * sh : sh, w : w + nw * sw : sw, c : c + nc]
    assert expected.shape == out_shape
    np.testing.assert_array_equal(_run(function, x, out_shape), expected)


def test_strided_slices_reaching_outside_the_input_are_refused():
    with pytest.raises(ValueError, match=r"axis 1 \(of NHWC\): 4 element\(s\) from 1 in steps of 2 are not within"):
        strided_slice_primfunc((1, 7, 5, 8), (0, 1, 0, 0), (1, 2, 1), (1, 4, 5, 8), LANES)
    with pytest.raises(ValueError, match="axis 3"):
        strided_slice_primfunc((1, 7, 5, 8), (0, 0, 0, 4), (1, 1, 1), (1, 7, 5, 5), LANES)
