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


def test_every_torch_spelling_has_a_lowering_rule_named_after_its_activations():
    for activation in activations.ACTIVATIONS.values():
        for module in activation.modules:
            assert activation.name in MODULE_RULES[module].what.split("/")
        for function in activation.functions:
            assert activation.name in FUNCTION_RULES[function].what.split("/")
        for method in activation.methods:
            assert activation.name in METHOD_RULES[method].what.split("/")
    assert MODULE_RULES[nn.GELU].what == "gelu/gelu_tanh"


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


@pytest.mark.parametrize(
    ("op", "target", "module", "args", "kwargs", "name"),
    [
        ("call_module", nn.GELU, nn.GELU(), (), {}, "gelu"),
        ("call_module", nn.GELU, nn.GELU(approximate="tanh"), (), {}, "gelu_tanh"),
        ("call_function", F.gelu, None, ("x",), {}, "gelu"),
        ("call_function", F.gelu, None, ("x", "tanh"), {}, "gelu_tanh"),
        ("call_function", F.gelu, None, ("x",), {"approximate": "tanh"}, "gelu_tanh"),
        ("call_function", F.gelu, None, ("x",), {"approximate": "other"}, None),
        ("call_module", nn.LeakyReLU, nn.LeakyReLU(), (), {}, "leaky_relu"),
        ("call_module", nn.LeakyReLU, nn.LeakyReLU(0.1), (), {}, None),  # only torch's default slope
        ("call_function", F.leaky_relu, None, ("x",), {}, "leaky_relu"),
        ("call_function", F.leaky_relu, None, ("x", 0.2), {}, None),
    ],
)
def test_spelled_tells_variants_apart_by_their_arguments(op, target, module, args, kwargs, name):
    found = activations.spelled(op, target, module, args, kwargs)
    assert (found.name if found is not None else None) == name


def test_only_fusable_activations_reach_the_conv_kernel_spec():
    fusable = ("none", "relu", "relu6", "leaky_relu", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu")
    fusable += ("gelu_tanh",)
    assert activations.FUSABLE_ACTIVATIONS == fusable
    BlockSparseConvSpec(1, 4, 4, 8, 16, 16, 8, activation="silu")
    expected = f"activation must be one of {', '.join(fusable)}, got 'tanh'"
    with pytest.raises(KernelSpecError, match=expected):
        BlockSparseConvSpec(1, 4, 4, 8, 16, 16, 8, activation="tanh")


def test_expressions_compute_the_torch_activation():
    import numpy as np
    from tvm import te

    values = np.linspace(-8, 8, 33, dtype=np.float32)
    references = (("relu", torch.relu), ("relu6", F.relu6), ("leaky_relu", F.leaky_relu), ("hardswish", F.hardswish))
    for name, reference in (*references, ("none", None)):
        x = te.placeholder((33,), "float32", name="x")
        activate = activations.expression(name)
        out = te.compute((33,), lambda i: activate(x[i]), name="out")  # noqa: B023 (used at once)
        function = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, out])}), target="llvm")
        result = tvm.runtime.empty((33,), "float32")
        function(tvm.runtime.tensor(values), result)
        expected = values if reference is None else reference(torch.from_numpy(values)).numpy()
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6, atol=1e-6)


def _evaluate(name: str, values):
    from tvm import te

    x = te.placeholder(values.shape, "float32", name="x")
    activate = activations.expression(name)
    out = te.compute(values.shape, lambda i: activate(x[i]), name="out")
    function = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, out])}), target="llvm")
    result = tvm.runtime.empty(values.shape, "float32")
    function(tvm.runtime.tensor(values), result)
    return result.numpy()


@pytest.mark.parametrize(("name", "approximate"), [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_gelu_expressions_match_torch_in_float64_over_a_wide_range(name, approximate):
    import numpy as np

    # Dense around 0 and past the clamps (erf at +-4 sqrt 2, exp at -87 / 88).
    values = np.concatenate([np.linspace(-12, 12, 4801), [-200.0, -90.0, 90.0, 200.0]]).astype(np.float32)
    expected = F.gelu(torch.from_numpy(values).double(), approximate=approximate).numpy()
    got = _evaluate(name, values)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


TORCH_FLOAT64 = {"sigmoid": torch.sigmoid, "silu": F.silu, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}


@pytest.mark.parametrize("name", list(TORCH_FLOAT64))
def test_sigmoid_family_matches_torch_in_float64_to_float_precision(name):
    import numpy as np

    values = np.linspace(-12, 12, 4801).astype(np.float32)
    expected = TORCH_FLOAT64[name](torch.from_numpy(values).double()).numpy()
    # An ulp or two: sigmoid's e^-12 = 6e-6 keeps its relative accuracy (no 1 - 1 / (1 + e)).
    np.testing.assert_allclose(_evaluate(name, values), expected, rtol=2.5e-7, atol=1e-30)


@pytest.mark.parametrize("name", list(TORCH_FLOAT64))
def test_sigmoid_family_is_sane_far_out_and_at_infinity(name):
    import numpy as np

    values = np.array([-np.inf, -200.0, -100.0, -88.0, 88.0, 100.0, 200.0, np.inf], dtype=np.float32)
    got = _evaluate(name, values)
    expected = TORCH_FLOAT64[name](torch.from_numpy(values).double()).numpy()
    if name == "silu":  # -inf * sigmoid(-inf) = -inf * 0: NaN in torch, NaN or -inf here
        assert np.isnan(expected[0]) and (np.isnan(got[0]) or got[0] == -np.inf)
        got, expected = got[1:], expected[1:]
    # e^-88 and smaller come out as e^-87 (exp's clamp): 1.6e-38 where torch has 0 or 1e-87.
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=2e-35)


def test_erf_and_exp_stay_within_float_precision():
    import math

    import numpy as np
    from tvm import te

    values = np.linspace(-6, 6, 1201).astype(np.float32)
    for expression, reference, tolerance in (
        (activations.erf, np.vectorize(math.erf), 3e-7),
        (activations.exp, np.exp, None),
    ):
        x = te.placeholder(values.shape, "float32", name="x")
        out = te.compute(values.shape, lambda i: expression(x[i]), name="out")  # noqa: B023 (used at once)
        function = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, out])}), target="llvm")
        result = tvm.runtime.empty(values.shape, "float32")
        function(tvm.runtime.tensor(values), result)
        expected = reference(values.astype(np.float64))
        if tolerance is None:
            np.testing.assert_allclose(result.numpy(), expected, rtol=3e-7)
        else:
            np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "sigmoid"])
def test_a_conv_with_a_fused_exp_or_erf_builds_fast_into_vector_code_without_libm_calls(name):
    import time

    from subp_fx.codegen.kernels.isa import vector_isa
    from subp_fx.codegen.kernels.tiling import heuristic_tile
    from subp_fx.codegen.target import parse_target

    target = parse_target("llvm -mcpu=znver3")  # compiled for AVX2, not run
    spec = BlockSparseConvSpec(
        1, 5, 7, 24, 32, 16, 24, kernel_size=(1, 1), padding=(0, 0), bias=True, residual=True, activation=name
    )
    started = time.perf_counter()
    asm = _block_sparse_conv_asm(spec, heuristic_tile(spec, vector_isa(target)), target)
    # Written naively (the erf series' terms copied, not bound once) this took minutes.
    assert time.perf_counter() - started < 30
    assert "erff" not in asm and "expf" not in asm
    assert "vfmadd" in asm and "%ymm" in asm


def test_a_standalone_sigmoid_or_silu_kernel_is_vector_code_without_libm_calls():
    from subp_fx.codegen.kernels.elementwise import activation_primfunc
    from subp_fx.codegen.target import parse_target

    target = parse_target("llvm -mcpu=znver3")
    for name in ("sigmoid", "silu"):
        function = activation_primfunc((1, 5, 7, 24), name, 8).with_attr("global_symbol", "k")
        asm = tvm.compile(tvm.IRModule({"k": function}), target=target).jit().inspect_source("asm")
        assert "expf" not in asm and "vdivps" in asm and "%ymm" in asm


def _block_sparse_conv_asm(spec, tile, target) -> str:
    from subp_fx.codegen.kernels.block_sparse_conv import block_sparse_conv2d_primfunc
    from subp_fx.codegen.kernels.isa import vector_isa

    function = block_sparse_conv2d_primfunc(spec, tile, vector_isa(target)).with_attr("global_symbol", "k")
    return tvm.compile(tvm.IRModule({"k": function}), target=target).jit().inspect_source("asm")
