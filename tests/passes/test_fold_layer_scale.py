"""The fold_layer_scale pass: a constant per-channel multiply merged into its Linear / conv."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torchvision

from subp_fx.passes import convert, fold_layer_scale, impose_random_masks
from subp_fx.passes.fold_layer_scale import FOLDED_LAYER_SCALES_META_KEY


def _multiplies(gm: fx.GraphModule) -> int:
    return sum(1 for node in gm.graph.nodes if node.op == "call_function" and node.target in (operator.mul, torch.mul))


def _assert_same(model: nn.Module, folded: nn.Module, shape=(2, 6, 5, 3)) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


class PointwiseBlock(nn.Module):
    """ConvNeXt's block end: Linear over channels behind a permute, (C, 1, 1) layer scale."""

    def __init__(self, channels=6, hidden=10, scale_shape=(6, 1, 1), bias=True):
        super().__init__()
        self.fc = nn.Linear(channels, hidden)
        self.back = nn.Linear(hidden, channels, bias=bias)
        self.layer_scale = nn.Parameter(torch.rand(scale_shape) + 0.5)

    def forward(self, x):
        y = self.back(torch.relu(self.fc(x.permute(0, 2, 3, 1))))
        return x + self.layer_scale * y.permute(0, 3, 1, 2)


class ConvScale(nn.Module):
    def __init__(self, scale_shape=(8, 1, 1), on_the_right=False):
        super().__init__()
        self.conv = nn.Conv2d(6, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.randn(scale_shape))
        self.on_the_right = on_the_right

    def forward(self, x):
        y = self.conv(x)
        return torch.mul(y, self.gamma) if self.on_the_right else self.gamma * y


@pytest.mark.parametrize("bias", [True, False])
def test_a_convnext_layer_scale_folds_into_the_linear_behind_the_permute(bias):
    torch.manual_seed(0)
    model = PointwiseBlock(bias=bias).eval()
    folded = fold_layer_scale(model)
    assert _multiplies(folded) == 0
    assert not [node for node in folded.graph.nodes if node.op == "get_attr"]
    assert folded.meta[FOLDED_LAYER_SCALES_META_KEY] == {"mul": "back"}
    _assert_same(model, folded)
    assert torch.equal(model.layer_scale, folded.layer_scale)  # the model itself is untouched


@pytest.mark.parametrize(("scale_shape", "on_the_right"), [((8, 1, 1), False), ((8, 1, 1), True), ((1,), False)])
def test_a_per_channel_constant_folds_into_a_conv(scale_shape, on_the_right):
    torch.manual_seed(0)
    model = ConvScale(scale_shape, on_the_right).eval()
    folded = fold_layer_scale(model)
    assert _multiplies(folded) == 0
    _assert_same(model, folded)


@pytest.mark.parametrize(
    "scale_shape",
    [(1, 5, 1), (6, 5, 1), (1, 1, 6, 1, 1)],  # along H; along two axes; adds an axis
)
def test_a_constant_along_another_axis_is_left_alone(scale_shape):
    model = PointwiseBlock(scale_shape=scale_shape).eval()
    folded = fold_layer_scale(model)
    assert _multiplies(folded) == 1
    assert folded.meta[FOLDED_LAYER_SCALES_META_KEY] == {}
    _assert_same(model, folded)


def test_a_4d_constant_on_a_conv_folds_only_when_the_example_shape_says_the_output_is_4d():
    # Conv2d also takes unbatched (C, H, W) inputs, where (1, C, 1, 1) broadcasts to 4-d: without
    # shapes the pass folds only what is exact for both; with an example input it knows the rank.
    model = ConvScale((1, 8, 1, 1)).eval()
    folded = fold_layer_scale(model)
    assert _multiplies(folded) == 1
    _assert_same(model, folded)
    folded = fold_layer_scale(model, (2, 6, 5, 3))
    assert _multiplies(folded) == 0
    assert folded.meta[FOLDED_LAYER_SCALES_META_KEY] == {"mul": "conv"}
    _assert_same(model, folded)
    unbatched = fold_layer_scale(model, (6, 5, 3))
    assert _multiplies(unbatched) == 1  # (1, 8, 1, 1) * (8, 5, 3) adds an axis


def test_a_layer_whose_output_has_other_users_is_left_alone():
    class TwoUsers(ConvScale):
        def forward(self, x):
            y = self.conv(x)
            return self.gamma * y + y

    model = TwoUsers().eval()
    folded = fold_layer_scale(model)
    assert _multiplies(folded) == 1
    _assert_same(model, folded)


def test_a_shared_layer_is_left_alone():
    class Shared(ConvScale):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.gamma * self.conv(torch.relu(self.conv(x)))

    model = Shared().eval()
    folded = fold_layer_scale(model)
    assert _multiplies(folded) == 1
    _assert_same(model, folded, shape=(1, 8, 5, 3))


def test_convnext_folds_every_layer_scale_and_a_sparse_one_keeps_its_masks():
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(num_classes=10).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "layer_scale"):
                module.layer_scale.uniform_(0.5, 1.5)
    folded = fold_layer_scale(model)
    assert len(folded.meta[FOLDED_LAYER_SCALES_META_KEY]) == 18  # one per block: 3 + 3 + 9 + 3
    assert _multiplies(folded) == 0
    _assert_same(model, folded, shape=(1, 3, 32, 32))
    sparse = impose_random_masks(model, 0.5, 16).eval()
    folded_sparse = convert(fold_layer_scale(sparse))
    _assert_same(sparse, folded_sparse, shape=(1, 3, 32, 32))
