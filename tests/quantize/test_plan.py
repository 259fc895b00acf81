"""plan_int8: which convs run in int8 (and why the others do not), which tensors are quantised."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

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
        "dw": "relu",  # a depthwise nn.Conv2d: on the int8 depthwise kernel
        "pw": "relu_1",
        "block.conv1": "relu_3",
        "block.conv2": "relu_4",
        "block.downsample": "relu_3",
        "odd": "relu_5",  # a dense nn.Conv2d: int8 too
    }
    # The conv and linear inputs, and the downsample's output: only ever added to conv2's output
    # (the add conv2's kernel fuses), so it is quantised for that kernel to read as bytes.
    assert plan.residuals == {"block_downsample": ("add",)}
    assert plan.linears == {"head": "flatten"}  # Linear(24, 10) on the pooled (B, 24) features
    quantised = [*plan.convs.values(), "flatten", "block_downsample"]
    assert plan.activations == {name: ActivationQuant.from_range(*ranges[name]) for name in quantised}
    assert list(plan.fp32_convs) == ["grouped"] and plan.fp32_linears == {}
    assert plan.fp32_convs["grouped"].startswith("grouped (groups=4)")
    assert plan.input_quant("block.downsample") is plan.activations["relu_3"]
    assert plan.input_quant("head") is plan.activations["flatten"]
    assert gm.code == code  # the graph is only read


def test_input_quant_of_a_conv_that_is_not_int8_names_the_int8_convs():
    plan = plan_int8(toy_graph(), _calibrated(toy_graph()))
    with pytest.raises(KeyError, match=r"'grouped' is not an int8 conv or linear.*block.conv1.*linears \['head'\]"):
        plan.input_quant("grouped")


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


class Residuals(nn.Module):
    """Three adds of int8 conv outputs; only ``a + b`` quantises an operand (``b``, the later:
    the add goes to ``a``'s kernel). ``c + d``: ``c`` is also read by a mean, so no kernel fuses
    the add; ``e + f``: ``f`` is also read by a mean, so it is not only a residual."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d, self.e, self.f = (nn.Conv2d(8, 8, 1) for _ in range(6))

    def forward(self, x):
        y = torch.relu(self.a(x) + self.b(x))
        c = self.c(y)
        z = torch.relu(c + self.d(y))
        f = self.f(z)
        return (self.e(z) + f).mean() + c.mean() + f.mean()


def test_only_an_int8_conv_output_that_is_only_a_fused_residual_is_quantised():
    gm = trace(Residuals().eval())
    ranges = calibrate(gm, [torch.randn(2, 8, 6, 6) for _ in range(2)])
    plan = plan_int8(gm, ranges)
    assert set(plan.convs) == {"a", "b", "c", "d", "e", "f"}
    assert plan.residuals == {"b": ("add",)}
    assert plan.activations["b"] == ActivationQuant.from_range(*ranges["b"])
    assert {"c", "d", "f"}.isdisjoint(plan.activations)


class Depthwise(nn.Module):
    """Depthwise convs the int8 depthwise kernel takes (stride 2, dilation, 6 channels) and those it
    does not (reflect padding, asymmetric padding, 23x23 taps), and a channel multiplier 2 (grouped)."""

    def __init__(self):
        super().__init__()
        self.strided = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
        self.dilated = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6)
        self.reflect = nn.Conv2d(6, 6, 3, padding=1, groups=6, padding_mode="reflect")
        self.even = nn.Conv2d(6, 6, 2, padding="same", groups=6)
        self.huge = nn.Conv2d(6, 6, 23, padding=11, groups=6)
        self.multiplier = nn.Conv2d(6, 12, 3, padding=1, groups=6)

    def forward(self, x):
        y = self.dilated(self.strided(x))
        return self.multiplier(self.huge(self.even(self.reflect(y))))


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_depthwise_convs_run_int8_unless_the_depthwise_kernel_cannot_compute_them():
    gm = trace(Depthwise().eval())
    plan = plan_int8(gm, calibrate(gm, [torch.randn(2, 6, 12, 12)]))
    assert plan.convs == {"strided": "x", "dilated": "strided"}
    reasons = plan.fp32_convs
    assert "padding_mode='reflect'" in reasons["reflect"] and "depthwise kernel" in reasons["reflect"]
    assert "asymmetric" in reasons["even"]
    assert "529 taps" in reasons["huge"] and "exact up to 518" in reasons["huge"]
    assert reasons["multiplier"].startswith("grouped (groups=6)")


class _Subclassed(nn.Linear):
    pass


class _KeepsSubclassedLinears(fx.Tracer):
    """A tracer that keeps a Linear subclass as one module call (subp_fx's traces through it)."""

    def is_leaf_module(self, module, qualified_name):
        return isinstance(module, _Subclassed) or super().is_leaf_module(module, qualified_name)


class Heads(nn.Module):
    """Linears the int8 kernel can and cannot compute: input (B, 8, 3, 3)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(72, 12)
        self.odd = nn.Linear(6, 4)
        self.shared = nn.Linear(12, 12)
        self.pointwise = nn.Linear(8, 8)
        self.subclassed = _Subclassed(12, 4)
        self.no_bias = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        y = self.shared(self.shared(self.fc(x.flatten(1))))
        z = self.pointwise(x.permute(0, 2, 3, 1))  # over a map's last axis: a 4-d input
        return self.subclassed(y) + self.odd(y[:, :6]) + self.no_bias(z.mean((1, 2))[:, :4])


def test_linears_on_2d_inputs_with_in_features_a_multiple_of_4_run_int8_the_others_say_why_not():
    heads = Heads().eval()
    gm = fx.GraphModule(heads, _KeepsSubclassedLinears().trace(heads))
    ranges = calibrate(gm, [torch.randn(2, 8, 3, 3)])
    plan = plan_int8(gm, ranges)
    assert plan.linears == {"fc": "flatten", "no_bias": "getitem_1"}
    assert set(plan.activations) == {"flatten", "getitem_1"}
    assert plan.convs == {} and plan.fp32_convs == {}
    reasons = plan.fp32_linears
    assert set(reasons) == {"odd", "shared", "pointwise", "subclassed"}
    assert "in_features=6 is not a multiple of 4" in reasons["odd"]
    assert "called 2 times" in reasons["shared"]
    assert "shape (2, 3, 3, 8); the int8 kernel takes 2-d (B, features) inputs" in reasons["pointwise"]
    assert reasons["subclassed"] == "a _Subclassed, not an nn.Linear"
    assert plan.input_quant("no_bias") == ActivationQuant.from_range(*ranges["getitem_1"])


class Pools(nn.Module):
    """Three max pools: of an int8 conv's ReLU (quantised with the pool's parameters), of a conv
    output also read by a mean (not), and of a mean-subtracted map, which no int8 conv produces (not)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Conv2d(8, 8, 1) for _ in range(4))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        y = self.b(self.pool(torch.relu(self.a(x))))
        z = self.c(F.max_pool2d(y, 2)) + y.mean()
        return self.d(F.max_pool2d(z - z.mean(), 1))


def test_only_an_int8_conv_output_read_by_nothing_but_a_quantised_max_pool_is_pooled_in_bytes():
    gm = trace(Pools().eval())
    ranges = calibrate(gm, [torch.randn(2, 8, 8, 8) for _ in range(2)])
    plan = plan_int8(gm, ranges)
    assert plan.pooled == {"relu": "pool"}
    assert plan.activations["relu"] == plan.activations["pool"]
    assert {"b", "sub"}.isdisjoint(plan.pooled)
