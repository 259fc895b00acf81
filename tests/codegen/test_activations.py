"""codegen.activations: one table drives the rules, the fusion planner, the kernels and the spec."""

from __future__ import annotations

import operator

import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen import activations  # noqa: E402
from subp_fx.codegen.errors import KernelSpecError  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec  # noqa: E402
from subp_fx.codegen.lowering.rules import FUNCTION_RULES, METHOD_RULES, MODULE_RULES  # noqa: E402


def test_every_torch_spelling_has_a_lowering_rule_named_after_its_activation():
    for activation in activations.ACTIVATIONS.values():
        for module in activation.modules:
            assert MODULE_RULES[module].what == activation.name
        for function in activation.functions:
            assert FUNCTION_RULES[function].what == activation.name
        for method in activation.methods:
            assert METHOD_RULES[method].what == activation.name


@pytest.mark.parametrize(
    ("op", "target", "name"),
    [
        ("call_module", nn.ReLU, "relu"),
        ("call_function", F.relu6, "relu6"),
        ("call_method", "relu_", "relu"),
        ("call_module", nn.Hardswish, "hardswish"),
        ("call_function", operator.add, None),
        ("placeholder", "x", None),
    ],
)
def test_spelled_finds_the_activation_a_node_calls(op, target, name):
    found = activations.spelled(op, target)
    assert (found.name if found is not None else None) == name


def test_only_fusable_activations_reach_the_conv_kernel_spec():
    assert activations.FUSABLE_ACTIVATIONS == ("none", "relu", "relu6")
    BlockSparseConvSpec(1, 4, 4, 8, 16, 16, 8, activation="relu6")
    with pytest.raises(KernelSpecError, match="activation must be one of none, relu, relu6, got 'hardswish'"):
        BlockSparseConvSpec(1, 4, 4, 8, 16, 16, 8, activation="hardswish")


def test_expressions_compute_the_torch_activation():
    import numpy as np
    from tvm import te

    values = np.linspace(-8, 8, 33, dtype=np.float32)
    for name, reference in (("relu", torch.relu), ("relu6", F.relu6), ("hardswish", F.hardswish), ("none", None)):
        x = te.placeholder((33,), "float32", name="x")
        activate = activations.expression(name)
        out = te.compute((33,), lambda i: activate(x[i]), name="out")  # noqa: B023 (used at once)
        function = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, out])}), target="llvm")
        result = tvm.runtime.empty((33,), "float32")
        function(tvm.runtime.tensor(values), result)
        expected = values if reference is None else reference(torch.from_numpy(values)).numpy()
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6, atol=1e-6)
