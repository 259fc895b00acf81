"""passes.fold_static_shapes: Python values computed from static shapes become constants; values
that depend on tensor data are left alone."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.errors import CompiledInputError
from subp_fx.passes import fold_static_shapes
from subp_fx.passes.fold_static_shapes import FOLDED_SHAPES_META_KEY, shape_queries

# Models in other libraries' styles wrap len so that fx records it (a Proxy has no len()).
fx.wrap("len")


class ShapeArithmetic(nn.Module):
    """Every spelling of shape arithmetic the pass names, in one forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.size()
        w = x.size(x.dim() - 1)  # a query whose argument is itself computed from the shape
        h *= 1  # fx records a plain mul (a Proxy has no in-place multiply)
        torch._assert(x.dim() == 4, "a 4-d input")
        groups = 3 * (x.ndim == 4) * (len(x.shape) != 3)
        x = x.view(b, groups, c // groups, h, w).sum(2)
        scale = (x.size(1) * 2 + h - w) * (x.shape[-1] < 100)
        flat = x.reshape(b, x.numel() // b)
        return flat.view(flat.size()) * scale  # a whole torch.Size as an argument


class DataDependent(nn.Module):
    def forward(self, x):
        total = x.sum().item()
        positive = (x > 0).float()
        return positive.view(x.size(0), -1) + total


def _targets(gm: fx.GraphModule) -> list:
    return [node.target for node in gm.graph.nodes if node.op in ("call_function", "call_method")]


def test_shape_arithmetic_folds_to_constants_and_computes_the_same():
    model = ShapeArithmetic().eval()
    folded = fold_static_shapes(model, (2, 3, 5, 7))
    assert shape_queries(folded) == []
    targets = _targets(folded)
    # getitem, floordiv, mul, add, sub, eq, ne, lt, len, torch._assert, size, dim, numel: all gone;
    # what is left computes on tensors (the last mul is the tensor times the folded scale).
    assert targets == ["view", "sum", "reshape", "view", operator.mul]
    assert folded.meta[FOLDED_SHAPES_META_KEY] > 15
    x = torch.randn(2, 3, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)
    view = next(node for node in folded.graph.nodes if node.target == "view")
    assert view.args[1:] == (2, 3, 2, 5, 7)


def test_values_that_depend_on_tensor_data_are_left_alone():
    folded = fold_static_shapes(DataDependent(), (2, 3, 4, 4))
    targets = _targets(folded)
    assert "item" in targets and operator.gt in targets and "sum" in targets
    assert "size" not in targets and folded.meta[FOLDED_SHAPES_META_KEY] == 1
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(folded(x), DataDependent()(x))


def test_the_input_graph_module_is_not_modified():
    gm = fx.symbolic_trace(ShapeArithmetic().eval())
    before = [node.name for node in gm.graph.nodes]
    fold_static_shapes(gm, (1, 3, 4, 4))
    assert [node.name for node in gm.graph.nodes] == before


def test_a_value_changed_in_place_later_is_not_folded():
    # shape = list(x.size()); shape.append(1); x.view(shape): the list is recorded before the append
    # changes it, so folding it would freeze the wrong value.
    graph = fx.Graph()
    x = graph.placeholder("x")
    shape = graph.call_function(list, (graph.call_method("size", (x,)),))
    graph.call_method("append", (shape, 1))
    graph.output(graph.call_method("view", (x, shape)))
    folded = fold_static_shapes(fx.GraphModule(nn.Module(), graph), (2, 3, 4, 4))
    assert folded(torch.zeros(2, 3, 4, 4)).shape == (2, 3, 4, 4, 1)
    assert "append" in _targets(folded) and folded.meta[FOLDED_SHAPES_META_KEY] == 1  # the size() alone


def test_an_input_the_model_does_not_run_on_is_refused_with_its_shape():
    with pytest.raises(CompiledInputError, match=r"does not run on an input of shape \(1, 4, 5, 7\)"):
        fold_static_shapes(ShapeArithmetic(), (1, 4, 5, 7))
