"""plan_int8: which convs run in int8 (and why the others do not), which tensors are quantised."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from subp_fx.passes import impose_random_masks, trace
from subp_fx.quantize.calibration import ActivationRanges, calibrate
from subp_fx.quantize.params import ActivationQuant
from subp_fx.quantize.plan import plan_int8
from tests.quantize.graphs import toy_graph
from tests.toy_models import toy_input


def _calibrated(gm, shape=(4, 3, 16, 16)):
    return calibrate(gm, [toy_input(seed, shape) for seed in range(2)])


def test_toy_net_plan_quantises_the_inputs_of_every_eligible_conv_and_says_why_others_stay_fp32():
    gm = toy_graph()
    code = gm.code
    ranges = _calibrated(gm)
    plan = plan_int8(gm, ranges)
    assert plan.convs == {
        "stem": "x",  # C_in=3: run on its input stored with a 4th, zero-weight channel
        "pw": "relu_1",
        "block.conv1": "relu_3",
        "block.conv2": "relu_4",
        "block.downsample": "relu_3",
        "odd": "relu_5",  # a dense nn.Conv2d: int8 too
    }
    assert plan.activations == {name: ActivationQuant.from_range(*ranges[name]) for name in plan.convs.values()}
    assert list(plan.fp32_convs) == ["dw", "grouped"]
    assert plan.fp32_convs["dw"].startswith("depthwise (groups=16)")
    assert plan.fp32_convs["grouped"].startswith("grouped (groups=4)")
    assert plan.input_quant("block.downsample") is plan.activations["relu_3"]
    assert gm.code == code  # the graph is only read


def test_input_quant_of_a_conv_that_is_not_int8_names_the_int8_convs():
    plan = plan_int8(toy_graph(), _calibrated(toy_graph()))
    with pytest.raises(KeyError, match="'dw' is not an int8 conv.*block.conv1"):
        plan.input_quant("dw")


class Irregular(nn.Module):
    def __init__(self):
        super().__init__()
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.shared = nn.Conv2d(8, 8, 1)
        self.odd = nn.Conv2d(6, 8, 1)
        self.circular = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular")
        self.even = nn.Conv2d(8, 8, 2, padding="same")
        self.flat = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.shared(self.shared(self.dilated(x)))
        y = self.even(self.circular(y)) + self.odd(y[:, :6])
        return self.flat(y.mean(3, keepdim=True).squeeze(3).unsqueeze(3))


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_irregular_convs_stay_fp32_each_with_its_reason():
    gm = trace(Irregular().eval())
    plan = plan_int8(gm, calibrate(gm, [torch.randn(2, 8, 6, 6)]))
    reasons = plan.fp32_convs
    assert "dilation=(2, 2)" in reasons["dilated"]
    assert "called 2 times" in reasons["shared"]
    assert "padding_mode='circular'" in reasons["circular"]
    assert "asymmetric" in reasons["even"]
    assert plan.convs == {"odd": "getitem", "flat": "unsqueeze"}  # C_in=6: its input is stored padded to 8


def test_a_conv_whose_input_was_not_calibrated_or_is_not_4d_stays_fp32():
    gm = toy_graph()
    ranges = _calibrated(gm)
    partial = ActivationRanges({k: v for k, v in ranges.ranges.items() if k != "relu_1"}, ranges.shapes)
    assert "no calibrated range" in plan_int8(gm, partial).fp32_convs["pw"]
    flat_shapes = {**ranges.shapes, "relu_5": (4, 64)}
    assert "4-d" in plan_int8(gm, ActivationRanges(ranges.ranges, flat_shapes)).fp32_convs["odd"]


def test_a_subp_conv_not_yet_converted_stays_fp32():
    masked = impose_random_masks(nn.Sequential(nn.Conv2d(16, 16, 1)).eval(), prune_rate=0.5, N=16)
    gm = trace(masked)
    plan = plan_int8(gm, calibrate(gm, [torch.randn(1, 16, 4, 4)]))
    assert "SUBPConv2d, not an nn.Conv2d or BlockSparseConv2d" in plan.fp32_convs["0"]
