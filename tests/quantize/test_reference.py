"""fake_quant_reference: the eager int8 model, its structure, and how close it stays to fp32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from subp_fx.quantize.calibration import calibrate
from subp_fx.quantize.modules import Dequantize, Int8Conv2dReference, Int8LinearReference, Quantize
from subp_fx.quantize.plan import Int8Plan, plan_int8
from subp_fx.quantize.reference import fake_quant_reference
from tests.quantize.graphs import SIGNED_INPUT_SHAPE, SignedNet, inference_graph, toy_graph
from tests.toy_models import seeded, toy_input


def _planned(gm, shape, calibration_seeds=range(4), batch=8):
    ranges = calibrate(gm, [toy_input(seed, (batch, *shape[1:])) for seed in calibration_seeds])
    return plan_int8(gm, ranges)


def _dequantized(reference) -> set[str]:
    """The tensors the reference graph dequantises (for users other than int8 convs)."""
    return {
        node.args[0].args[0].name
        for node in reference.graph.nodes
        if node.op == "call_module" and isinstance(reference.get_submodule(node.target), Dequantize)
    }


def _relative_error(reference: torch.Tensor, result: torch.Tensor) -> float:
    return ((reference - result).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("G", [1, 4])
def test_the_toy_net_in_int8_stays_close_to_fp32(G):
    gm = toy_graph(G=G)
    plan = _planned(gm, (1, 3, 16, 16))
    assert len(plan.convs) == 7  # the RGB stem and the depthwise conv too
    x = toy_input(100, (64, 3, 16, 16))
    with torch.no_grad():
        fp32, int8 = gm(x), fake_quant_reference(gm, plan)(x)
    # Measured 0.2-0.3% of the largest logit and 100% top-1 agreement (G=1 and 4); a wrong scale,
    # zero point or weight layout is off by far more.
    assert _relative_error(fp32, int8) < 0.02
    assert (fp32.argmax(1) == int8.argmax(1)).float().mean().item() >= 0.95
    assert not torch.equal(fp32, int8)  # quantisation did happen


def test_signed_activations_get_zero_points_and_the_input_is_quantised_first():
    gm = inference_graph(seeded(SignedNet).eval())
    plan = _planned(gm, SIGNED_INPUT_SHAPE)
    assert plan.convs == {"conv1": "x", "conv2": "conv1", "conv3": "conv2"} and plan.linears == {"head": "mean"}
    assert all(0 < plan.activations[name].zero_point < 255 for name in plan.convs.values())
    assert plan.activations["mean"].zero_point == 0  # the head reads a mean of ReLUs: no negatives
    reference = fake_quant_reference(gm, plan)
    ops = [node.op for node in reference.graph.nodes]
    assert ops[0] == "placeholder" and "placeholder" not in ops[1:]
    assert _dequantized(reference) == {"conv2"}  # the residual add reads it too
    x = toy_input(100, (32, *SIGNED_INPUT_SHAPE[1:]))
    with torch.no_grad():
        fp32, int8 = gm(x), reference(x)
    assert _relative_error(fp32, int8) < 0.02  # measured 0.3%


def test_the_reference_computes_the_planned_arithmetic_step_by_step():
    """SignedNet by hand: every int8 conv and the int8 head on the codes, the residual on the
    dequantised value."""
    gm = inference_graph(seeded(SignedNet).eval())
    plan = _planned(gm, SIGNED_INPUT_SHAPE)
    quant = plan.activations
    conv = {name: Int8Conv2dReference.from_conv(gm.get_submodule(name), plan.input_quant(name)) for name in plan.convs}
    x = toy_input(7, (4, *SIGNED_INPUT_SHAPE[1:]))
    with torch.no_grad():
        y = conv["conv1"](quant["x"].quantize(x))
        z = conv["conv2"](quant["conv1"].quantize(y))
        z_codes = quant["conv2"].quantize(z)
        w = conv["conv3"](z_codes) + quant["conv2"].dequantize(z_codes)
        head = Int8LinearReference.from_linear(gm.head, plan.input_quant("head"))
        expected = head(quant["mean"].quantize(torch.relu(w).mean((2, 3))))
        assert torch.equal(fake_quant_reference(gm, plan)(x), expected)


def test_every_use_of_a_quantised_tensor_reads_its_quantisation_and_the_original_is_untouched():
    gm = toy_graph()
    plan = _planned(gm, (1, 3, 16, 16))
    reference = fake_quant_reference(gm, plan)
    nodes = {node.name: node for node in reference.graph.nodes}
    for name in plan.activations:
        (user,) = nodes[name].users
        assert isinstance(reference.get_submodule(user.target), Quantize)
    for target in plan.convs:
        assert isinstance(reference.get_submodule(target), Int8Conv2dReference)
    assert list(plan.linears) == ["head"]
    assert isinstance(reference.get_submodule("head"), Int8LinearReference)
    for target in plan.fp32_convs:
        assert type(reference.get_submodule(target)) is type(gm.get_submodule(target))
    # Each quantised toy tensor is read by int8 layers only, but the downsample's output, which
    # the residual add reads (dequantised: in the compiled model, inside conv2's kernel).
    assert _dequantized(reference) == set(plan.residuals) == {"block_downsample"}
    assert not any(isinstance(module, (Quantize, Int8Conv2dReference)) for module in gm.modules())


def test_a_plan_for_another_graph_is_refused():
    gm = toy_graph()
    plan = _planned(gm, (1, 3, 16, 16))
    renamed = dataclasses.replace(plan, activations={**plan.activations, "nowhere": plan.activations["relu_1"]})
    with pytest.raises(ValueError, match=r"does not fit.*missing \['nowhere'\]"):
        fake_quant_reference(gm, renamed)
    rewired = Int8Plan(plan.activations, {**plan.convs, "pw": "relu_3"}, plan.fp32_convs)
    with pytest.raises(ValueError, match=r"not called on their planned \(quantised\) input \['pw'\]"):
        fake_quant_reference(gm, rewired)
    rewired_head = dataclasses.replace(plan, linears={"head": "relu_5"})
    with pytest.raises(ValueError, match=r"not called on their planned \(quantised\) input \['head'\]"):
        fake_quant_reference(gm, rewired_head)
