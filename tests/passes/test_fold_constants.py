"""The fold_constants pass: tensors computed from the model's constants alone become constants;
random, in-place and input-dependent calls stay; the model is untouched."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.passes.fold_constants import FOLDED_ATTRIBUTE_PREFIX, FOLDED_CONSTANTS_META_KEY, fold_constants


class ConstantArithmetic(nn.Module):
    """timm's ConvNeXt layer scale (``gamma.reshape(1, -1, 1, 1)``), a weight-standardised conv
    (``F.batch_norm`` of the reshaped weight, as timm's StdConv2d), and a chunk of a constant
    whose parts are picked by ``getitem``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(6) + 0.5)
        self.std_weight = nn.Parameter(torch.randn(6, 6, 1, 1))
        # Parameters: symbolic_trace evaluates arithmetic on buffers itself while tracing.
        self.offsets = nn.Parameter(torch.randn(12))

    def forward(self, x):
        x = self.conv(x).mul(self.gamma.reshape(1, -1, 1, 1))
        weight = F.batch_norm(
            self.std_weight.reshape(1, 6, -1), None, None, training=True, momentum=0.0, eps=1e-6
        ).reshape_as(self.std_weight)
        x = F.conv2d(x, weight)
        low, high = self.offsets.chunk(2)
        return x + (low - high).reshape(6, 1, 1)


def _calls(gm: fx.GraphModule) -> list:
    return [node.target for node in gm.graph.nodes if node.op in ("call_function", "call_method")]


def test_constant_subgraphs_are_evaluated_once_and_read_as_constants():
    torch.manual_seed(0)
    model = fx.symbolic_trace(ConstantArithmetic().eval())
    before = {name: value.clone() for name, value in model.state_dict().items()}
    calls_before = _calls(model)
    folded = fold_constants(model)
    # Left: mul, conv2d, add (each reads the input); gone: both reshapes of the scale and the
    # weight, batch_norm, reshape_as, chunk, both getitems and the subtraction.
    assert _calls(folded) == ["mul", F.conv2d, operator.add]
    assert set(folded.meta[FOLDED_CONSTANTS_META_KEY]) == {"reshape", "reshape_as", "reshape_2"}
    assert all(name.startswith(FOLDED_ATTRIBUTE_PREFIX) for name in folded.meta[FOLDED_CONSTANTS_META_KEY].values())
    x = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))
    # The model keeps its graph, its values and no new attributes.
    assert _calls(model) == calls_before
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())
    assert not [name for name, _ in model.named_buffers() if name.startswith(FOLDED_ATTRIBUTE_PREFIX)]


def test_a_folded_constant_is_a_copy_a_later_in_place_change_of_the_parameter_cannot_reach():
    torch.manual_seed(0)
    folded = fold_constants(ConstantArithmetic().eval())
    attribute = folded.meta[FOLDED_CONSTANTS_META_KEY]["reshape"]
    value = getattr(folded, attribute).clone()
    with torch.no_grad():
        folded.gamma.mul_(2)
    assert torch.equal(getattr(folded, attribute), value)
    assert not getattr(folded, attribute).requires_grad


class Unfoldable(nn.Module):
    """A random call on a constant, a constant changed in place on every run, and arithmetic on
    the input."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(3, 1, 1))
        self.counter = nn.Parameter(torch.zeros(3, 1, 1), requires_grad=False)

    def forward(self, x):
        noise = torch.rand_like(self.scale)
        self.counter.add_(1)
        bump = self.counter * 2
        return x * self.scale.abs() + noise * 0 + bump


def test_random_in_place_and_input_calls_are_left_alone():
    folded = fold_constants(Unfoldable().eval())
    # Only scale.abs() folds: rand_like is random, counter is changed in place (so counter * 2
    # changes every run).
    assert list(folded.meta[FOLDED_CONSTANTS_META_KEY]) == ["abs_1"]
    targets = _calls(folded)
    assert torch.rand_like in targets and "add_" in targets and "abs" not in targets
    assert sum(target is operator.mul for target in targets) == 3  # x * scale, noise * 0, counter * 2
