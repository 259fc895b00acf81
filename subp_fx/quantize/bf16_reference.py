"""``bf16_reference``: the eager model a bf16 build computes, as a GraphModule.

A bf16 build (``codegen.lowering.bf16``) runs some convs on ``vdpbf16ps``: their input and their
weights (batch norm already folded in) are rounded to bf16, to nearest even, and the products are
summed in float32; their bias, and everything else in the graph, stay float32; and the tensors it
stores as bf16 (a bf16 conv's output that only bf16 convs read) are rounded for every reader, the
residual adds included. The reference does exactly that in PyTorch: each such layer is replaced
by :class:`Bf16InputsReference`, a copy of it whose weights are rounded to bf16 (and back to
float32, where torch computes) and which rounds its input the same way, and each stored tensor
is followed by a rounding that all its users read. The compiled model is checked against it
within float32 summation-order differences; against the fp32 model it differs by bf16's 8-bit
mantissa.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn


def round_to_bf16(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` rounded to the nearest bf16 value (ties to even), as float32."""
    return tensor.to(torch.bfloat16).to(torch.float32)


class Bf16InputsReference(nn.Module):
    """``layer`` (a conv, block-sparse conv or linear) with bf16-rounded weights and input; its
    bias (any parameter named ``bias``) stays float32, as the kernel adds it to the float32 sums."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = copy.deepcopy(layer)
        with torch.no_grad():
            for name, parameter in self.layer.named_parameters():
                if name.rpartition(".")[2] != "bias" and parameter.is_floating_point():
                    parameter.copy_(round_to_bf16(parameter))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(round_to_bf16(x))


def bf16_reference(gm: fx.GraphModule, layers: Iterable[str], stored: Iterable[str] = ()) -> fx.GraphModule:
    """A copy of ``gm`` (not modified) in which each module named in ``layers`` (``Bf16Plan.layers``:
    the kernel table's bf16 entries) is a :class:`Bf16InputsReference`, and each node named in
    ``stored`` (``Bf16Plan.stored``) is rounded to bf16 for all its users. ``ValueError`` names any
    layer ``gm`` does not call or node it does not have."""
    gm = copy.deepcopy(gm)
    layers, stored = set(layers), set(stored)
    called = {str(node.target) for node in gm.graph.nodes if node.op == "call_module"}
    missing = sorted(layers - called)
    if missing:
        raise ValueError(f"bf16 layers {missing} are not modules this graph calls; valid are {sorted(called)}")
    nodes = {node.name: node for node in gm.graph.nodes}
    absent = sorted(stored - set(nodes))
    if absent:
        raise ValueError(f"bf16-stored tensors {absent} are not nodes of this graph")
    for target in layers:
        parent, _, attribute = target.rpartition(".")
        owner = gm.get_submodule(parent)
        setattr(owner, attribute, Bf16InputsReference(getattr(owner, attribute)))
    for name in sorted(stored):
        node = nodes[name]
        with gm.graph.inserting_after(node):
            rounded = gm.graph.call_function(round_to_bf16, (node,))
        node.replace_all_uses_with(rounded, delete_user_cb=lambda user, own=rounded: user is not own)
    gm.graph.lint()
    gm.recompile()
    return gm
