"""calibrate: per-node ranges over every batch, compiled-batch slicing, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from subp_fx.errors import CalibrationError
from subp_fx.passes import trace
from subp_fx.quantize.calibration import calibrate


class Shaped(nn.Module):
    """A reshape by a literal batch size, as fold_static_shapes leaves a graph folded for batch 2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1)

    def forward(self, x):
        return self.conv(x).reshape(2, 8, 6, 6)


def _graph(seed: int = 0):
    torch.manual_seed(seed)
    return trace(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1)).eval())


def _batches(count: int = 3, size: int = 4, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 4, 6, 6, generator=generator) * (index + 1) for index in range(count)]


def test_ranges_are_the_min_and_max_of_every_node_over_all_batches():
    gm = _graph()
    batches = _batches()
    ranges = calibrate(gm, batches, example_shape=(4, 6, 6))
    everything = torch.cat(batches)
    with torch.no_grad():
        first = gm.get_submodule("0")(everything)
        expected = {"input_1": everything, "_0": first, "_1": first.relu(), "_2": gm.get_submodule("2")(first.relu())}
    assert set(ranges.ranges) == set(expected)
    for name, value in expected.items():
        assert ranges[name] == pytest.approx((value.min().item(), value.max().item()), rel=1e-6)
        assert ranges.shapes[name][1:] == tuple(value.shape[1:])
    assert (ranges.batches, ranges.images) == (3, 12)
    assert ranges.activation_quant("_1").zero_point == 0  # a ReLU output


def test_pairs_and_numpy_batches_give_the_same_ranges_as_tensors():
    gm = _graph()
    batches = _batches()
    plain = calibrate(gm, batches)
    pairs = calibrate(gm, [(batch, torch.zeros(4)) for batch in batches])
    arrays = calibrate(gm, (batch.numpy().astype(np.float64) for batch in batches))
    assert plain.ranges == pairs.ranges
    assert set(arrays.ranges) == set(plain.ranges)
    for name in plain.ranges:
        assert arrays[name] == pytest.approx(plain[name], rel=1e-6)


def test_a_four_d_example_shape_runs_slices_of_the_compiled_batch():
    gm = trace(Shaped().eval())
    batches = _batches(size=4)
    with pytest.raises(RuntimeError):  # the graph only runs at batch 2
        gm(batches[0])
    sliced = calibrate(gm, batches, example_shape=(2, 4, 6, 6))
    assert sliced.shapes["reshape"][0] == 2 and sliced.images == 12
    whole = calibrate(trace(Shaped().eval()), [batch[:2] for batch in batches], example_shape=(4, 6, 6))
    assert set(whole.ranges) == set(sliced.ranges)


def test_module_modes_are_restored_after_running_in_eval_mode():
    gm = trace(nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    gm.train()
    gm.get_submodule("1").eval()
    calibrate(gm, _batches(1))
    assert gm.training and gm.get_submodule("0").training and not gm.get_submodule("1").training
    assert gm.get_submodule("1").num_batches_tracked.item() == 0  # batch norm statistics were not updated


@pytest.mark.parametrize(
    ("batches", "example_shape", "match"),
    [
        ([], None, "empty"),
        ([torch.randn(4, 6, 6)], None, "4-d NCHW"),
        ([torch.randn(2, 3, 6, 6)], (4, 6, 6), r"\(C, H, W\) = \(3, 6, 6\).*\(4, 6, 6\)"),
        ([torch.randn(2, 4, 5, 6)], (4, 6, 6), "compiled for"),
        ([torch.full((2, 4, 6, 6), float("nan"))], None, "non-finite"),
        ([torch.zeros(2, 4, 6, 6, dtype=torch.uint8)], None, "dtype torch.uint8"),
        ([torch.randn(0, 4, 6, 6)], None, "no images"),
        (["images"], None, "is a str"),
        ([(torch.randn(2, 4, 6, 6),)], None, "1 items"),
        ([torch.randn(2, 4, 6, 6)], (4, 6), r"\(C, H, W\) or \(B, C, H, W\)"),
    ],
)
def test_bad_calibration_data_is_refused_with_what_is_valid(batches, example_shape, match):
    with pytest.raises(CalibrationError, match=match):
        calibrate(_graph(), batches, example_shape=example_shape)


def test_a_node_computing_non_finite_values_is_named():
    class Overflows(nn.Module):
        def forward(self, x):
            return torch.log(x * 0)

    with pytest.raises(CalibrationError, match="node 'log'.*non-finite"):
        calibrate(trace(Overflows()), _batches(1))


def test_a_graph_with_two_inputs_is_refused():
    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(CalibrationError, match="2 inputs"):
        calibrate(trace(TwoInputs()), _batches(1))


def test_a_batch_that_the_compiled_batch_does_not_divide_is_filled_up_with_its_own_images():
    images = torch.randn(5, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    whole = calibrate(_graph(), [images])
    sliced = calibrate(_graph(), [images], example_shape=(3, 4, 6, 6))  # slices of 3, 2 (+1 repeated)
    assert sliced.ranges.keys() == whole.ranges.keys() and sliced.images == 5
    for name, (low, high) in whole.ranges.items():
        assert sliced.ranges[name] == pytest.approx((low, high), rel=1e-5, abs=1e-6), name
