"""``fake_quant_reference``: the eager int8 model an ``Int8Plan`` describes, as a GraphModule.

This is what a compiled int8 model is tested against (within one quantisation step): every
quantised tensor is replaced, for all its users, by ``dequantize(quantize(x))``, and every int8
conv or linear reads the uint8 codes and computes the exact integer arithmetic
(``Int8Conv2dReference``, ``Int8LinearReference``). Everything else (fp32 convs and linears,
activations, adds, pooling) runs as in the original graph.
"""

from __future__ import annotations

import copy

import torch.fx as fx

from subp_fx.quantize.modules import Dequantize, Int8Conv2dReference, Int8LinearReference, Quantize
from subp_fx.quantize.plan import Int8Plan, conv_input


def _free_name(gm: fx.GraphModule, base: str) -> str:
    name, suffix = base, 0
    while hasattr(gm, name):
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def _insertion_point(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The node after which ``node``'s quantisation goes: itself, or for an input the last
    placeholder (placeholders stay first, they are the forward's arguments)."""
    if node.op != "placeholder":
        return node
    return [candidate for candidate in gm.graph.nodes if candidate.op == "placeholder"][-1]


def _check_plan_fits(gm: fx.GraphModule, plan: Int8Plan) -> dict[str, fx.Node]:
    """name -> node of ``gm``, after checking every name, conv and linear of ``plan`` is in it."""
    nodes = {node.name: node for node in gm.graph.nodes}
    missing = sorted(set(plan.activations) - set(nodes))
    calls = {node.target: node for node in gm.graph.nodes if node.op == "call_module"}
    wrong = []
    for target, source in {**plan.convs, **plan.linears}.items():
        node = calls.get(target)
        given = conv_input(node) if node is not None else None
        if given is None or given.name != source or source not in plan.activations:
            wrong.append(target)
    if missing or wrong:
        raise ValueError(
            f"the Int8Plan does not fit this graph: quantised tensors missing {missing}, int8 layers not called "
            f"on their planned (quantised) input {wrong}; make the plan with plan_int8 on this same graph"
        )
    return nodes


def _replace_module(gm: fx.GraphModule, target: str, module) -> None:
    parent, _, attribute = target.rpartition(".")
    setattr(gm.get_submodule(parent), attribute, module)


def fake_quant_reference(gm: fx.GraphModule, plan: Int8Plan) -> fx.GraphModule:
    """A copy of ``gm`` computing ``plan``'s int8 model eagerly (``gm`` is not modified).

    For each tensor in ``plan.activations`` a ``Quantize`` node (uint8 codes) and a
    ``Dequantize`` node are inserted after it; every user reads the dequantised value except the
    int8 convs of ``plan.convs`` and linears of ``plan.linears``, which become
    ``Int8Conv2dReference`` / ``Int8LinearReference`` modules reading the codes (a tensor only
    int8 layers read keeps no ``Dequantize``).
    Refuses (``ValueError``) a plan made for another graph (a tensor or layer it names is absent,
    or a layer is called on another input).
    """
    gm = copy.deepcopy(gm)
    nodes = _check_plan_fits(gm, plan)
    codes: dict[str, fx.Node] = {}
    for name, quant in plan.activations.items():
        node = nodes[name]
        quantize_name = _free_name(gm, f"int8_quantize_{name}")
        gm.add_submodule(quantize_name, Quantize(quant))
        dequantize_name = _free_name(gm, f"int8_dequantize_{name}")
        gm.add_submodule(dequantize_name, Dequantize(quant))
        with gm.graph.inserting_after(_insertion_point(gm, node)):
            quantized = gm.graph.call_module(quantize_name, (node,))
        with gm.graph.inserting_after(quantized):
            dequantized = gm.graph.call_module(dequantize_name, (quantized,))
        node.replace_all_uses_with(dequantized, delete_user_cb=lambda user, own=quantized: user is not own)
        codes[name] = quantized
    layers = {**plan.convs, **plan.linears}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in layers:
            continue
        source = layers[node.target]
        layer, quant = gm.get_submodule(node.target), plan.activations[source]
        if node.target in plan.convs:
            _replace_module(gm, node.target, Int8Conv2dReference.from_conv(layer, quant))
        else:
            _replace_module(gm, node.target, Int8LinearReference.from_linear(layer, quant))
        node.replace_input_with(conv_input(node), codes[source])
    for node in list(gm.graph.nodes):  # a tensor read by int8 layers only needs no dequantised copy
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), Dequantize) and not node.users:
            gm.graph.erase_node(node)
            delattr(gm, node.target)
    gm.graph.lint()
    gm.recompile()
    return gm
