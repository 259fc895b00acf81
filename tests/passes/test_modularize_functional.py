"""The modularize_functional pass: functional batch norms / convs / linears on graph constants
(timm's layer style) become module calls, exactly, and the rest is left with a reason."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.errors import CompiledInputError
from subp_fx.passes.capture import capture_for_compile
from subp_fx.passes.fold_static_shapes import fold_static_shapes
from subp_fx.passes.modularize_functional import (
    LEFT_FUNCTIONAL_META_KEY,
    MODULARIZED_META_KEY,
    modularize_functional,
)
from subp_fx.passes.trace import trace
from tests.toy_models import BatchNormAct2d, ConvTorchSame, Linear, TimmNormActNet, randomise_batchnorms, seeded

_FUNCTIONAL = (F.batch_norm, torch.batch_norm, F.conv2d, F.linear)


def _functional_calls(gm: fx.GraphModule) -> int:
    return sum(node.op == "call_function" and node.target in _FUNCTIONAL for node in gm.graph.nodes)


def _module_calls(gm: fx.GraphModule, kind: type) -> int:
    return sum(node.op == "call_module" and type(gm.get_submodule(node.target)) is kind for node in gm.graph.nodes)


def _timm_net_graph(shape=(2, 3, 16, 16)) -> tuple[nn.Module, fx.GraphModule]:
    model = randomise_batchnorms(seeded(TimmNormActNet))
    captured = capture_for_compile(model, torch.zeros(shape))
    return model, fold_static_shapes(captured.model, shape)


def test_timm_style_layers_become_module_calls_and_the_output_is_unchanged():
    model, gm = _timm_net_graph()
    assert _functional_calls(gm) == 9  # 3 Conv2dSame + 1 padding='same' conv, 4 BatchNormAct2d, 1 Linear
    result = modularize_functional(gm, (2, 3, 16, 16))
    assert _functional_calls(result) == 0
    assert _module_calls(result, nn.BatchNorm2d) == 4
    assert _module_calls(result, nn.Conv2d) == 4 + 3  # the new ones, plus pw and the SE's two
    assert _module_calls(result, nn.Linear) == 1
    assert not [node for node in result.graph.nodes if node.op == "get_attr"]  # no constant read is left
    assert result.meta[MODULARIZED_META_KEY]["batch_norm"] == "bn1.bn"
    assert result.meta[MODULARIZED_META_KEY]["conv2d"] == "stem.conv"
    assert result.meta[MODULARIZED_META_KEY]["linear"] == "head.linear"
    assert result.meta[LEFT_FUNCTIONAL_META_KEY] == {}
    assert all(not module.training for module in result.modules() if type(module) is nn.BatchNorm2d)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(result(x), model(x))  # the same functions on the same values
    assert _functional_calls(gm) == 9  # the input graph is untouched


def test_eps_momentum_and_a_missing_affine_are_carried_over():
    class NoAffine(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = BatchNormAct2d(8, eps=0.25, affine=False)
            self.bn.momentum = 0.3

        def forward(self, x):
            return self.bn(self.conv(x))

    model = NoAffine().eval()
    torch.nn.init.uniform_(model.bn.running_var, 0.5, 2.0)
    torch.nn.init.normal_(model.bn.running_mean)
    result = modularize_functional(model, (1, 3, 6, 6))
    bn = result.get_submodule("bn.bn")
    assert type(bn) is nn.BatchNorm2d and bn.eps == 0.25 and bn.momentum == 0.3 and not bn.training
    assert torch.equal(bn.weight, torch.ones(8)) and torch.equal(bn.bias, torch.zeros(8))
    assert torch.equal(bn.running_var, model.bn.running_var)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(result(x), model(x))


class _AtenBatchNorm(nn.Module):
    """torch.batch_norm: weight and bias come before the running statistics."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        bn = self.bn
        return torch.batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, False, 0.1, 1e-5, False)


def test_the_aten_batch_norm_argument_order_is_read():
    model = randomise_batchnorms(_AtenBatchNorm())
    result = modularize_functional(model, (2, 4, 3, 3))
    assert _module_calls(result, nn.BatchNorm2d) == 1 and _functional_calls(result) == 0
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        assert torch.equal(result(x), model(x))


@pytest.mark.parametrize(
    ("kernel", "dilation", "padding", "pads"),
    [
        (3, 1, (1, 1), 0),  # even total: the conv's own padding
        (3, 2, (2, 2), 0),
        (2, 1, (0, 0), 1),  # odd total: the extra row / column in an F.pad before it
        ((4, 3), 1, (0, 0), 1),
    ],
)
def test_torch_same_padding_becomes_numbers(kernel, dilation, padding, pads):
    torch.manual_seed(0)
    model = ConvTorchSame(4, 6, kernel, dilation=dilation).eval()
    result = modularize_functional(model, (1, 4, 7, 8))
    conv = result.get_submodule("conv2d")
    assert type(conv) is nn.Conv2d and conv.padding == padding
    assert sum(node.target is F.pad for node in result.graph.nodes) == pads
    x = torch.randn(1, 4, 7, 8)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(result(x), expected, rtol=0, atol=1e-6 * expected.abs().max().item())


def test_valid_padding_strides_and_groups_are_copied():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 2, 3, 3))
            self.bias = nn.Parameter(torch.randn(8))

        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias, stride=(2, 1), padding="valid", groups=2)

    model = Functional()
    result = modularize_functional(model, (1, 4, 9, 9))
    conv = result.get_submodule("conv2d")  # weights at the root: the module takes the node's name
    assert (conv.stride, conv.padding, conv.groups, conv.in_channels) == ((2, 1), (0, 0), 2, 4)
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        assert torch.equal(result(x), model(x))


class _Leftovers(nn.Module):
    """Calls the pass must leave: batch statistics, a 2-d batch norm, a computed conv weight."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.bn1d = nn.BatchNorm1d(4)
        self.fc = Linear(4, 2)

    def forward(self, x):
        x = F.conv2d(x, self.conv.weight * 2.0, self.conv.bias)  # weight standardisation-like
        x = F.batch_norm(x, self.bn.running_mean, self.bn.running_var, training=True)
        features = x.mean((2, 3))
        features = F.batch_norm(features, self.bn1d.running_mean, self.bn1d.running_var, training=False)
        return self.fc(features)


def test_what_is_not_an_eval_mode_constant_layer_is_left_with_the_reason():
    model = _Leftovers().eval()
    result = modularize_functional(model, (1, 3, 8, 8))
    left = result.meta[LEFT_FUNCTIONAL_META_KEY]
    assert set(left) == {"conv2d", "batch_norm", "batch_norm_1"}
    assert "weight is computed in the graph" in left["conv2d"]
    assert "training=True" in left["batch_norm"]
    assert "2-d" in left["batch_norm_1"]
    assert result.meta[MODULARIZED_META_KEY] == {"linear": "fc.linear"}
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(result(x), model(x))


def test_a_new_name_never_shadows_an_attribute():
    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)  # the owner already has a "linear"
            self.weight = nn.Parameter(torch.randn(3, 3))

        def forward(self, x):
            return self.linear(F.linear(x, self.weight))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.owner = Owner()

        def forward(self, x):
            return self.owner(x)

    model = Outer()
    result = modularize_functional(trace(model), (2, 3))
    assert result.meta[MODULARIZED_META_KEY] == {"linear": "owner.linear_1"}
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.equal(result(x), model(x))


def test_an_input_shape_the_model_does_not_run_on_is_refused():
    with pytest.raises(CompiledInputError, match=r"\(1, 5, 8, 8\)"):
        modularize_functional(_AtenBatchNorm().eval(), (1, 5, 8, 8))
