"""kernels.layout's channel kernels on small odd shapes: the shuffle gather and the slice at an
offset against numpy / torch, each parallel over pixels and vectorised over channels."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.codegen.kernels.layout import shuffle_channels_primfunc, slice_channels_primfunc  # noqa: E402
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
